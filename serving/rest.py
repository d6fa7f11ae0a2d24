"""TF Serving's REST API as a Flask app over the model manager.

URLs are matched with TF Serving's own patterns (case-insensitive):

    GET  /v1/models/{m}[/versions/{v} | /labels/{l}][/metadata]
    POST /v1/models/{m}[/versions/{v} | /labels/{l}]:(predict|classify|regress)

Every answer is JSON; every error is {"error": message} with the HTTP status
TF Serving gives its code (errors.HTTP_STATUS), including for unknown paths,
oversized bodies and methods, so a client never has to parse HTML.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from flask import Flask, Response, request
from google.protobuf import json_format
from tensorflow_serving.apis.get_model_metadata_pb2 import GetModelMetadataResponse, SignatureDefMap
from tensorflow_serving.apis.get_model_status_pb2 import GetModelStatusResponse
from werkzeug.exceptions import HTTPException

from core.contract import SIGNATURE, version_number
from serving import json_tensor
from serving.errors import Code, ServingError, invalid_argument
from serving.manager import ModelManager
from serving.model import VersionStatus
from serving.options import DEFAULT_MAX_BODY_BYTES

PREDICT_URL = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/([0-9]+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.I)
STATUS_URL = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/([0-9]+)|/labels/([^/:]+))?(?:/(metadata))?", re.I)


def create_app(manager: ModelManager, *, metrics_path: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes

    @app.route("/v1/<path:_rest>", methods=["GET", "POST"])
    def v1(_rest: str) -> Response:
        started = time.perf_counter()
        record = {"model": "", "version": "", "api": "unknown"}
        try:
            body, status = _dispatch(manager, record), 200
        except ServingError as error:
            body, status = {"error": error.message}, error.http_status
            record["status"] = error.code.name
        except HTTPException:  # e.g. 413 from reading the body: http_error() answers
            raise
        except Exception as error:  # a bug of ours: still JSON, still counted
            app.logger.exception("request failed: %s %s", request.method, request.path)
            body, status = {"error": f"Internal error: {type(error).__name__}"}, 500
            record["status"] = Code.INTERNAL.name
        # Unknown model names would each add a time series: count them as one.
        model = record["model"] if manager.knows(record["model"]) else ""
        manager.metrics.request(model, record["version"], record["api"],
                                record.get("status", "OK"), time.perf_counter() - started)
        return _json(body, status)

    if metrics_path:
        @app.get(metrics_path)
        def metrics() -> Response:
            return Response(manager.metrics.exposition(), mimetype="text/plain; version=0.0.4")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        message = {
            413: f"Request body larger than {max_body_bytes} bytes: send fewer or smaller "
                 "examples per request",
            404: f"Malformed request: {request.method} {request.path}",
            405: f"Malformed request: {request.method} {request.path}",
        }.get(error.code or 500, error.description or error.name)
        return _json({"error": message}, error.code or 500)

    return app


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _dispatch(manager: ModelManager, record: dict[str, str]) -> dict[str, Any]:
    path = request.path
    if request.method == "POST" and (match := PREDICT_URL.fullmatch(path)):
        name, version, label, verb = match.groups()
        record.update(model=name, api=verb.lower())
        if verb.lower() != "predict":
            raise ServingError(Code.UNIMPLEMENTED,
                               f"{verb} is not supported by this server: use :predict, "
                               "which runs any signature (\"signature_name\")")
        return _predict(manager, name, _version(version), label, record)
    if request.method == "GET" and (match := STATUS_URL.fullmatch(path)):
        name, version, label, metadata = match.groups()
        if not name:
            raise invalid_argument("Missing model name in request.")
        record.update(model=name, api="metadata" if metadata else "status")
        if metadata:
            return _metadata(manager, name, _version(version), label, record)
        return _status(manager.status(name, _version(version), label))
    raise invalid_argument(f"Malformed request: {request.method} {path}")


def _version(text: str | None) -> int | None:
    if not text:
        return None
    number = version_number(text)
    if number is None:
        raise invalid_argument(f"Failed to convert version: {text} to numeric.")
    return number


def _predict(manager: ModelManager, name: str, version: int | None, label: str | None,
             record: dict[str, str]) -> dict[str, Any]:
    document = json_tensor.parse_body(request.get_data())
    signature_name = document.get("signature_name")
    if signature_name is not None and not isinstance(signature_name, str):
        raise invalid_argument("'signature_name' must be a string")
    with manager.acquire(name, version, label) as handle:
        record["version"] = str(handle.version.number)
        signature = handle.servable.signature(signature_name)
        form, inputs, size = json_tensor.request_inputs(
            document, handle.servable.inputs[signature])
        outputs = handle.predict(signature, inputs, size)
    return json_tensor.response(form, outputs)


def _metadata(manager: ModelManager, name: str, version: int | None, label: str | None,
              record: dict[str, str]) -> dict[str, Any]:
    """Built as TF Serving builds it: a GetModelMetadataResponse holding the
    SignatureDefMap in an Any, written out as TF Serving writes it."""
    with manager.acquire(name, version, label) as handle:
        record["version"] = str(handle.version.number)
        signatures = SignatureDefMap()
        for key, signature_def in handle.servable.signature_defs.items():
            signatures.signature_def[key].CopyFrom(signature_def)
        accelerator = handle.servable.accelerator
    answer = GetModelMetadataResponse()
    answer.model_spec.name = name
    answer.model_spec.version.value = handle.version.number
    answer.metadata["signature_def"].Pack(signatures)
    document = _metadata_json(answer)
    if accelerator is not None:  # one more metadata field; a SavedModel's answer is TF Serving's
        document["metadata"]["backend"] = {"name": accelerator.name, "file": accelerator.file,
                                           "signature_name": SIGNATURE}
    return document


def _metadata_json(answer: GetModelMetadataResponse) -> dict[str, Any]:
    """As TF Serving writes it: the Any as the SignatureDefMap it holds, no "@type"."""
    signatures = SignatureDefMap()
    answer.metadata["signature_def"].Unpack(signatures)
    return {"model_spec": _proto_json(answer.model_spec),
            "metadata": {"signature_def": _proto_json(signatures)}}


def _status(statuses: list[VersionStatus]) -> dict[str, Any]:
    answer = GetModelStatusResponse()
    for status in statuses:
        entry = answer.model_version_status.add()
        entry.version = status.version
        entry.state = int(status.state)
        entry.status.SetInParent()  # TF Serving always writes it, OK included
        if status.error is not None:
            entry.status.error_code = int(status.error.code)
            entry.status.error_message = status.error.message
    return _proto_json(answer)


def _proto_json(message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
