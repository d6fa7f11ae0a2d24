"""The server's options and their defaults, in one place, free of TensorFlow.

`python -m serving` builds its flags from these defaults before anything
imports TensorFlow, so `--help` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Options:
    """tensorflow_model_server's flags, by the same names, and a few of our own."""

    rest_api_port: int = 8501
    rest_api_host: str = "0.0.0.0"
    rest_api_num_threads: int = 32
    model_name: str = "default"
    model_base_path: str | None = None
    model_config_file: Path | None = None
    model_config_file_poll_wait_seconds: float = 0
    file_system_poll_wait_seconds: float = 1
    enable_batching: bool = False
    batching_parameters_file: Path | None = None
    monitoring_config_file: Path | None = None
    base_path_root: Path = Path("/")
    max_request_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    drain_seconds: float = 30
    #: "litert" runs a version's pixels.tflite where it has one; "none" always the SavedModel.
    accelerated_backend: str = "litert"
    #: Cores for each LiteRT call (0: all of them).
    accelerated_threads: int = 0
