"""The REST client's own behaviour: retries, errors, and staying free of TensorFlow.

Retries are checked against a scripted HTTP server that fails on purpose,
since a real model server cannot be made to answer 503 on cue.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.serving_client import ServingClient, ServingRequestError


class Scripted(BaseHTTPRequestHandler):
    """Answers with the next (status, body) of `script`; records every request."""

    script: list[tuple[int, dict]] = []
    seen: list[str] = []

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def _answer(self) -> None:
        Scripted.seen.append(f"{self.command} {self.path}")
        status, body = Scripted.script.pop(0)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[str]:
    Scripted.script, Scripted.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


OK = {"predictions": [{"scores": [0.2, 0.8], "classes": ["apple", "pear"]}]}
UNAVAILABLE = {"error": "The batch scheduling queue to which this task was submitted is full"}


def test_predict_is_retried_after_503(scripted: str):
    Scripted.script = [(503, UNAVAILABLE), (503, UNAVAILABLE), (200, OK)]
    client = ServingClient(scripted, "fruits", retries=3, backoff=0.01)
    (prediction,) = client.classify([b"jpeg bytes"])
    assert (prediction.label, prediction.confidence) == ("pear", 0.8)
    assert prediction.scores == {"apple": 0.2, "pear": 0.8}
    assert Scripted.seen == ["POST /v1/models/fruits:predict"] * 3


def test_503_after_the_last_retry_is_reported_as_retryable(scripted: str):
    Scripted.script = [(503, UNAVAILABLE)] * 2
    with pytest.raises(ServingRequestError) as raised:
        ServingClient(scripted, "fruits", retries=1, backoff=0.01).status()
    assert len(Scripted.seen) == 2  # the first try and one retry
    assert raised.value.status_code == 503
    assert raised.value.retryable
    assert "queue" in raised.value.message


def test_unreachable_server_is_a_retryable_client_error():
    client = ServingClient("http://127.0.0.1:9", "fruits", retries=1, backoff=0.01)
    with pytest.raises(ServingRequestError) as raised:
        client.status()
    assert raised.value.status_code is None
    assert raised.value.retryable


def test_client_errors_are_not_retried(scripted: str):
    Scripted.script = [(400, {"error": "JSON Parse error: nope"})]
    with pytest.raises(ServingRequestError) as raised:
        ServingClient(scripted, "fruits", retries=3).predict(instances=[1])
    assert (raised.value.status_code, raised.value.message) == (400, "JSON Parse error: nope")
    assert not raised.value.retryable
    assert len(Scripted.seen) == 1


def test_many_images_are_sent_in_requests_of_batch_size(scripted: str):
    Scripted.script = [(200, {"predictions": OK["predictions"] * n}) for n in (2, 2, 1)]
    predictions = ServingClient(scripted, "fruits", batch_size=2).classify([b"x"] * 5)
    assert len(predictions) == 5
    assert len(Scripted.seen) == 3


def test_urls_name_versions_and_labels_as_tf_serving_does():
    client = ServingClient("http://host:8501/", "my model")
    assert client.url() == "http://host:8501/v1/models/my%20model"
    assert client.url(version=3) == "http://host:8501/v1/models/my%20model/versions/3"
    assert client.url(label="canary") == "http://host:8501/v1/models/my%20model/labels/canary"


def test_importing_the_client_does_not_import_tensorflow():
    code = "import sys, core.serving_client; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip() == "False"
