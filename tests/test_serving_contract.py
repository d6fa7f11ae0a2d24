"""TF Serving's REST API contract, checked against TF Serving's own test model.

Written from TF Serving's REST documentation and the answers its handler tests
record for saved_model_half_plus_two_2_versions (see the README beside it in
../shared/tfserving-testdata): y = 0.5 * x + 2, versions 123 and 124, served
with a specific-versions policy and the label Version_Label -> 123.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from core.settings import get_settings
from tests.factories import wait_until
from tests.serving_process import ServingProcess, available_versions

MODEL = "saved_model_half_plus_two_2_versions"
TESTDATA = get_settings().shared_dir / "tfserving-testdata"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    folder = tmp_path_factory.mktemp("half_plus_two")
    config = folder / "models.config"
    config.write_text(f"""
model_config_list {{
  config {{
    name: "{MODEL}"
    base_path: "{TESTDATA / MODEL}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 123 versions: 124 }} }}
    version_labels {{ key: "Version_Label" value: 123 }}
  }}
}}""")
    batching = folder / "batching.config"
    batching.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 1000 }\n")
    process = ServingProcess(
        [f"--model_config_file={config}", "--enable_batching",
         f"--batching_parameters_file={batching}",
         f"--monitoring_config_file={Path('serving/monitoring.config')}",
         "--max_request_body_bytes=1048576"], folder / "server.log").start()
    client = process.client(MODEL)
    wait_until(lambda: available_versions(client) == {123, 124}, 60, "both versions")
    yield process
    assert process.stop() == 0


def url(server: ServingProcess, suffix: str = "") -> str:
    return f"{server.url}/v1/models/{MODEL}{suffix}"


def post(server: ServingProcess, suffix: str, body: object | bytes) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(url(server, suffix), data=data, timeout=30)


def error_of(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()["error"]


AVAILABLE_OK = {"state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


def test_status_lists_every_version(server: ServingProcess):
    answer = requests.get(url(server), timeout=10).json()
    assert sorted(answer["model_version_status"], key=lambda s: s["version"]) == [
        {"version": "123", **AVAILABLE_OK}, {"version": "124", **AVAILABLE_OK}]


@pytest.mark.parametrize("suffix", ["/versions/123", "/labels/Version_Label"])
def test_status_of_one_version_by_number_or_label(server: ServingProcess, suffix: str):
    assert requests.get(url(server, suffix), timeout=10).json() == {
        "model_version_status": [{"version": "123", **AVAILABLE_OK}]}


@pytest.mark.parametrize("suffix", ["/metadata", "/versions/123/metadata",
                                    "/labels/Version_Label/metadata"])
def test_metadata_equals_what_tf_serving_answers(server: ServingProcess, suffix: str):
    expected = json.loads((TESTDATA / f"{MODEL}_metadata.json").read_text())
    answer = requests.get(url(server, suffix), timeout=10).json()
    if suffix == "/metadata":  # the latest version: 124, same signatures
        expected["model_spec"]["version"] = "124"
    assert answer == expected


def test_predict_row_form(server: ServingProcess):
    answer = post(server, "/versions/123:predict", {"instances": [[1.0], [2.0]]})
    assert answer.json() == {"predictions": [[2.5], [3.0]]}


def test_predict_columnar_form_with_signature_name(server: ServingProcess):
    body = {"signature_name": "serving_default", "inputs": [[3.0], [4.0]]}
    assert post(server, ":predict", body).json() == {"outputs": [[3.5], [4.0]]}


def test_predict_by_label_and_with_named_instances(server: ServingProcess):
    body = {"instances": [{"x": [10.0]}, {"x": [-4]}]}
    answer = post(server, "/labels/Version_Label:predict", body)
    assert answer.json() == {"predictions": [[7.0], [0.0]]}


def test_predict_other_signature_of_the_model(server: ServingProcess):
    answer = post(server, ":predict", {"signature_name": "classify_x2_to_y3",
                                       "inputs": {"inputs": [[1.0]]}})
    assert answer.status_code == 200
    assert answer.json() == {"outputs": [[3.5]]}  # y3 = 0.5 * x2 + 3


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_body_that_is_not_a_json_object_is_a_parse_error(server: ServingProcess, body: bytes):
    assert error_of(post(server, ":predict", body), 400).startswith("JSON Parse error")


@pytest.mark.parametrize(("body", "message"), [
    ({"instances": [[1.0]], "inputs": [[1.0]]}, "only one of 'inputs' or 'instances'"),
    ({"signature_name": "serving_default"}, "Missing 'inputs' or 'instances' key"),
    ({"instances": []}, "non-empty list"),
    ({"instances": [{"y": [1.0]}]}, "input 'y' is not in the signature"),
    ({"inputs": {"x": [[1.0]], "z": [[2.0]]}}, "input 'z' is not in the signature"),
    ({"instances": [["a"]]}, "takes float32 values"),
    ({"instances": [[1.0, 2.0]]}, "per-example shape [2]; the signature expects [1]"),
    ({"instances": [[1.0], [2.0, 3.0]]}, "different lengths"),
    ({"signature_name": "nope", "instances": [[1.0]]},
     'Serving signature name: "nope" not found in signature def'),
    ({"signature_name": 7, "instances": [[1.0]]}, "'signature_name' must be a string"),
])
def test_malformed_predict_requests_get_400_naming_the_problem(
        server: ServingProcess, body: dict, message: str):
    assert message in error_of(post(server, ":predict", body), 400)


@pytest.mark.parametrize(("body", "message"), [
    (b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (b'{"instances": [[' + b"9" * 5000 + b"]]}", "JSON Parse error"),
    (b'{"signature_name": "classify_x_to_y", "instances": ["\\ud800"]}', "not valid Unicode"),
])
def test_pathological_json_gets_400_not_500(server: ServingProcess, body: bytes, message: str):
    assert message in error_of(post(server, ":predict", body), 400)


@pytest.mark.parametrize("suffix", ["/versions/99999999999999999999",
                                    "/versions/99999999999999999999:predict"])
def test_version_numbers_beyond_int64_are_invalid(server: ServingProcess, suffix: str):
    method = "post" if suffix.endswith(":predict") else "get"
    response = requests.request(method, url(server, suffix), json={"instances": [[1.0]]},
                                timeout=10)
    assert "Failed to convert version: 99999999999999999999" in error_of(response, 400)


def test_too_many_instances_for_one_batch_get_400(server: ServingProcess):
    message = error_of(post(server, ":predict", {"instances": [[1.0]] * 10_000}), 400)
    assert "Task size 10000 is larger than maximum batch size 64" in message


def test_oversized_body_gets_a_json_413(server: ServingProcess):
    body = b'{"instances": [' + b"[1.0]," * (50 * 1024 * 1024 // 6) + b"[1.0]]}"
    message = error_of(post(server, ":predict", body), 413)
    assert "larger than 1048576 bytes" in message


@pytest.mark.parametrize(("method", "suffix", "status", "message"), [
    ("get", "/versions/7", 404, f"Could not find version 7 of model {MODEL}"),
    ("get", "/labels/nope", 404, "Unrecognized servable version label: nope"),
    ("post", "/versions/7:predict", 404, f"Servable not found for request: Specific({MODEL}, 7)"),
    ("post", "/labels/nope:predict", 404, "Unrecognized servable version label: nope"),
    ("get", "/versions/7/metadata", 404, "Servable not found"),
    ("post", ":classify", 501, "classify is not supported"),
    ("post", ":regress", 501, "regress is not supported"),
    ("post", ":explain", 400, "Malformed request: POST"),
    ("get", ":predict", 400, "Malformed request: GET"),
    ("get", "/versions/abc", 400, "Malformed request"),
])
def test_unknown_versions_labels_and_verbs(server: ServingProcess, method: str, suffix: str,
                                           status: int, message: str):
    response = requests.request(method, url(server, suffix), json={"instances": [[1.0]]},
                                timeout=10)
    assert message in error_of(response, status)


def test_unknown_model_is_404(server: ServingProcess):
    response = requests.get(f"{server.url}/v1/models/nope", timeout=10)
    assert error_of(response, 404) == "Could not find any versions of model nope"
    response = requests.post(f"{server.url}/v1/models/nope:predict", json={}, timeout=10)
    assert error_of(response, 404) == "Servable not found for request: Latest(nope)"


def test_paths_outside_the_api_get_json_404(server: ServingProcess):
    assert "Malformed request" in error_of(requests.get(f"{server.url}/favicon.ico"), 404)


def test_prometheus_metrics_count_requests_and_batch_sizes(server: ServingProcess):
    post(server, "/versions/124:predict", {"instances": [[1.0], [2.0], [3.0]]})
    text = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=10).text
    assert (f':tensorflow:serving:request_count_total{{API="predict",model_name="{MODEL}",'
            f'status="OK",version="124"}}') in text
    assert (f':tensorflow:serving:batching_session:processed_batch_size_count{{'
            f'model_name="{MODEL}",signature="serving_default",version="124"}}') in text
    assert ':tensorflow:serving:request_latency_bucket{API="status"' in text


def test_server_still_serves_after_every_bad_request(server: ServingProcess):
    # Runs last in this module: everything above threw bad input at it.
    assert post(server, ":predict", {"instances": [[8.0]]}).json() == {"predictions": [[6.0]]}
