"""TF Serving's config files and version rules, as the embedded server reads them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format

from core.contract import version_folders
from serving import config, versions
from serving.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_the_repositorys_config_files_parse():
    models = config.read_model_server_config(ROOT / "serving" / "models.config")
    (model,) = models.model_config_list.config
    assert (model.name, model.base_path) == ("classifier", "/models/classifier")
    assert versions.describe(model.model_version_policy) == "all"
    assert config.read_batching_parameters(ROOT / "serving" / "batching.config") == \
        config.BatchingOptions(max_batch_size=32, batch_timeout_micros=0,
                               max_enqueued_batches=100, num_batch_threads=1)
    assert config.read_monitoring_config(ROOT / "serving" / "monitoring.config") == \
        "/monitoring/prometheus/metrics"


def test_batching_fields_left_out_take_tf_servings_defaults(tmp_path: Path):
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 8 }")
    assert config.read_batching_parameters(path) == config.BatchingOptions(
        max_batch_size=8, batch_timeout_micros=0, max_enqueued_batches=10,
        num_batch_threads=os.cpu_count() or 1)


def test_monitoring_disabled_serves_no_metrics(tmp_path: Path):
    path = tmp_path / "monitoring.config"
    path.write_text("prometheus_config { enable: false }")
    assert config.read_monitoring_config(path) is None


MODEL = 'name: "m" base_path: "/models/m" model_platform: "tensorflow"'


@pytest.mark.parametrize(("text", "message"), [
    ("model_config_list { config { name: ", "1:"),
    (f"model_config_list {{ config {{ {MODEL} }} config {{ {MODEL} }} }}",
     "model 'm' is configured twice"),
    ('model_config_list { config { name: "m" } }', "model 'm' has no base_path"),
    ('model_config_list { config { name: "m" base_path: "models/m" } }',
     "Expected model m to have an absolute path; got base_path()=models/m"),
    ('model_config_list { config { base_path: "/x" } }', "a model config has no name"),
    ('model_config_list { config { name: "m" base_path: "/x" model_platform: "onnx" } }',
     "model_platform 'onnx' is not supported"),
    (f"model_config_list {{ config {{ {MODEL} model_version_policy {{ specific {{ }} }} }} }}",
     "a specific version policy needs versions"),
    (f'model_config_list {{ config {{ {MODEL} version_labels {{ key: "a" value: 0 }} }} }}',
     "label 'a' must name a version > 0"),
    ('custom_model_config { }', "only model_config_list is supported"),
    ("model_config_list { config { nme: 1 } }", 'has no field named "nme"'),
])
def test_bad_model_configs_are_refused_with_the_reason(tmp_path: Path, text: str, message: str):
    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        config.read_model_server_config(path)
    assert str(path) in str(raised.value)
    assert message in str(raised.value)


@pytest.mark.parametrize(("text", "message"), [
    ("max_batch_size { value: 0 }", "max_batch_size must be at least 1"),
    ("allowed_batch_sizes: 8", 'has no field named "allowed_batch_sizes"'),
    ("max_batch_size: 8", "max_batch_size"),
])
def test_bad_batching_parameters_are_refused(tmp_path: Path, text: str, message: str):
    path = tmp_path / "batching.config"
    path.write_text(text)
    with pytest.raises(ConfigError, match="batching.config") as raised:
        config.read_batching_parameters(path)
    assert message in str(raised.value)


def test_a_missing_config_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read .*nothing.config"):
        config.read_model_server_config(tmp_path / "nothing.config")


def policy(text: str) -> versions.VersionPolicy:
    return text_format.Parse(text, versions.VersionPolicy())


@pytest.mark.parametrize(("text", "expected"), [
    ("", {7}),
    ("latest { }", {7}),
    ("latest { num_versions: 2 }", {3, 7}),
    ("all { }", {1, 3, 7}),
    ("specific { versions: 1 versions: 5 }", {1}),
])
def test_version_policies_pick_like_tf_serving(text: str, expected: set[int]):
    assert versions.aspired(policy(text), [1, 3, 7]) == expected


def test_only_numbered_folders_are_versions(tmp_path: Path):
    for name in ("00000123", "7", "reports", ".staging-8-99", "v9", "²", "9" * 20):
        (tmp_path / name).mkdir()
    (tmp_path / "12").write_text("a file, not a folder")
    assert version_folders(tmp_path) == {123: tmp_path / "00000123", 7: tmp_path / "7"}
    assert version_folders(tmp_path / "missing") == {}


def test_fingerprint_changes_when_a_copy_completes(tmp_path: Path):
    (tmp_path / "saved_model.pb").write_bytes(b"half")
    before = versions.fingerprint(tmp_path)
    (tmp_path / "variables").mkdir()
    (tmp_path / "variables" / "variables.index").write_bytes(b"rest")
    assert versions.fingerprint(tmp_path) != before


@pytest.mark.parametrize(("args", "message"), [
    (["--model_config_file=/nonexistent/models.config"], "cannot read /nonexistent"),
    (["--model_config_file=serving/models.config", "--model_base_path=/x"],
     "give --model_config_file or --model_base_path, not both"),
    ([], "give --model_base_path"),
])
def test_command_line_refuses_bad_config_with_exit_code_2(args: list[str], message: str):
    result = subprocess.run([sys.executable, "-m", "serving", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"error: {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_generated_protobuf_code_matches_the_proto(tmp_path: Path):
    # protoc runs in its own process: its bundled protobuf library must not
    # share one with TensorFlow's (that crashes the interpreter).
    proto_dir = ROOT / "serving" / "proto"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}",
                    f"--python_out={tmp_path}", str(proto_dir / "serving_options.proto")],
                   check=True, timeout=60)
    assert (tmp_path / "serving_options_pb2.py").read_text() == \
        (proto_dir / "serving_options_pb2.py").read_text(), "run `make protos`"
