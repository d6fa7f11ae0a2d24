"""The REST client of TF Serving's API, shared by the site, the workers, tests and
benchmarks.

It talks to the official server and to the embedded one alike, and imports no
TensorFlow (the web and worker processes never load it). Connections are
pooled; connection failures and 503 (UNAVAILABLE: a server starting, a full
batch queue) are retried with exponential backoff; other errors raise
ServingRequestError carrying TF Serving's `{"error": ...}` message.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from core.contract import CLASSES, INPUT, SCORES

DEFAULT_URL = "http://127.0.0.1:8501"


class ServingRequestError(Exception):
    """The server answered with an error (status_code set) or could not be reached (None)."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message if status_code is None else f"HTTP {status_code}: {message}")
        self.message = message
        self.status_code = status_code

    @property
    def retryable(self) -> bool:
        """Worth trying again later: unreachable, overloaded or not serving yet."""
        return self.status_code in (None, 404, 429, 503)


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    scores: dict[str, float]


class ServingClient:
    def __init__(self, base_url: str = DEFAULT_URL, model: str = "classifier", *,
                 timeout: float = 30.0, connect_timeout: float = 3.0, retries: int = 3,
                 backoff: float = 0.25, pool_size: int = 16, batch_size: int = 32):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = (connect_timeout, timeout)
        self.batch_size = batch_size
        retry = Retry(total=retries, connect=retries, read=0, status=retries, other=0,
                      status_forcelist=(503,), allowed_methods=None, backoff_factor=backoff,
                      raise_on_status=False)
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def url(self, version: int | None = None, label: str | None = None) -> str:
        url = f"{self.base_url}/v1/models/{quote(self.model, safe='')}"
        if version is not None:
            url += f"/versions/{int(version)}"
        elif label is not None:
            url += f"/labels/{quote(label, safe='')}"
        return url

    def status(self, version: int | None = None, label: str | None = None) -> list[dict]:
        return self._call("GET", self.url(version, label))["model_version_status"]

    def metadata(self, version: int | None = None, label: str | None = None) -> dict:
        return self._call("GET", self.url(version, label) + "/metadata")

    def predict(self, *, instances: Any = None, inputs: Any = None,
                signature_name: str | None = None, version: int | None = None,
                label: str | None = None) -> dict:
        """The raw :predict answer: {"predictions": ...} or {"outputs": ...}."""
        if (instances is None) == (inputs is None):
            raise ValueError("give exactly one of instances (row form) or inputs (columnar)")
        body: dict[str, Any] = ({"instances": instances} if instances is not None
                                else {"inputs": inputs})
        if signature_name:
            body["signature_name"] = signature_name
        return self._call("POST", self.url(version, label) + ":predict", json=body)

    def classify(self, images: Sequence[bytes], *, version: int | None = None,
                 label: str | None = None) -> list[Prediction]:
        """One Prediction per encoded image, sent `batch_size` images per request."""
        predictions: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            rows = self.predict(instances=[{INPUT: {"b64": base64.b64encode(i).decode()}}
                                           for i in chunk],
                                version=version, label=label)["predictions"]
            predictions.extend(_prediction(row) for row in rows)
        return predictions

    def _call(self, method: str, url: str, **kwargs: Any) -> dict:
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ServingRequestError(f"cannot reach {self.base_url}: {_why(exc)}") from exc
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:200] or response.reason}
        if response.status_code != 200:
            message = body.get("error", response.reason) if isinstance(body, dict) else str(body)
            raise ServingRequestError(message, response.status_code)
        return body


def _prediction(row: dict[str, Any]) -> Prediction:
    scores = dict(zip(row[CLASSES], row[SCORES], strict=True))
    label = max(scores, key=scores.__getitem__)
    return Prediction(label=label, confidence=scores[label], scores=scores)


def _why(exc: requests.RequestException) -> str:
    """What went wrong, in words ("Connection refused", "timed out"), not the
    nested reprs of requests and urllib3 (the address is said already)."""
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    return str(cause) or type(cause).__name__
