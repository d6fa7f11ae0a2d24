"""TF Serving's option files, read as TF Serving reads them: protobuf text format.

The same files configure the official server in docker-compose.yml and the
embedded one, so they are parsed with protobuf's own `text_format` into
TF Serving's messages (`ModelServerConfig` from tensorflow-serving-api; the
batching and monitoring messages from serving/proto). Anything TF Serving
would reject, or that the embedded server cannot honour, is a ConfigError
naming the file and the reason.

Base paths must be absolute, as TF Serving requires. They are paths as the
container sees them (/models/classifier on the models volume); the embedded
server finds them under --base_path_root (`make serve` passes the checkout,
so /models/classifier is ./models/classifier).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config.model_server_config_pb2 import ModelConfig, ModelServerConfig

from serving.errors import ConfigError
from serving.proto.serving_options_pb2 import BatchingParameters, MonitoringConfig

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


@dataclass(frozen=True)
class BatchingOptions:
    """BatchingParameters with TF Serving's defaults filled in."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1


def _parse(path: Path, message):
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def read_model_server_config(path: Path) -> ModelServerConfig:
    config = _parse(path, ModelServerConfig())
    try:
        validate(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return config


def single_model_config(name: str, base_path: str) -> ModelServerConfig:
    """What --model_name and --model_base_path mean: one model, latest version."""
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = os.path.abspath(base_path)  # a convenience TF Serving does not offer
    model.model_platform = "tensorflow"
    validate(config)
    return config


def validate(config: ModelServerConfig) -> None:
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError("only model_config_list is supported (not custom_model_config)")
    names: set[str] = set()
    for model in config.model_config_list.config:
        _validate_model(model)
        if model.name in names:
            raise ConfigError(f"model {model.name!r} is configured twice")
        names.add(model.name)


def _validate_model(model: ModelConfig) -> None:
    if not model.name:
        raise ConfigError("a model config has no name")
    if not model.base_path:
        raise ConfigError(f"model {model.name!r} has no base_path")
    if not model.base_path.startswith("/"):
        raise ConfigError(f"Expected model {model.name} to have an absolute path; "
                          f"got base_path()={model.base_path}")
    if model.model_platform not in ("", "tensorflow"):
        raise ConfigError(
            f"model {model.name!r}: model_platform {model.model_platform!r} is not supported; "
            "use \"tensorflow\"")
    policy = model.model_version_policy
    if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
        raise ConfigError(f"model {model.name!r}: a specific version policy needs versions")
    for label, version in model.version_labels.items():
        if version <= 0:
            raise ConfigError(f"model {model.name!r}: label {label!r} must name a version > 0")


def read_batching_parameters(path: Path | None) -> BatchingOptions:
    if path is None:
        return BatchingOptions()
    params = _parse(path, BatchingParameters())
    defaults = BatchingOptions()
    values = {
        field: getattr(params, field).value if params.HasField(field) else getattr(defaults, field)
        for field in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                      "num_batch_threads")
    }
    for field, value in values.items():
        minimum = 0 if field == "batch_timeout_micros" else 1
        if value < minimum:
            raise ConfigError(f"{path}: {field} must be at least {minimum}, not {value}")
    return BatchingOptions(**values)


def read_monitoring_config(path: Path | None) -> str | None:
    """The path Prometheus metrics are served at, or None when not enabled."""
    if path is None:
        return None
    config = _parse(path, MonitoringConfig())
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    metrics_path = prometheus.path or DEFAULT_METRICS_PATH
    if not metrics_path.startswith("/"):
        raise ConfigError(f"{path}: prometheus_config.path must start with '/'")
    return metrics_path
