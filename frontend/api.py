"""The JSON API under /api: predictions, batches, served model versions.

Errors are `{"error": "..."}` with a 4xx/5xx status (frontend/errors.py); the
contract is written down in frontend/openapi.py and served at /api/openapi.json.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request, url_for
from flask_login import current_user

from core.db import Source
from core.serving_client import ServingRequestError
from frontend import predictions, quotas
from frontend.downloads import attachment, csv_attachment
from frontend.openapi import document
from frontend.services import limits, services
from frontend.uploads import UploadError, sent_files
from frontend.versions import served_versions

bp = Blueprint("api", __name__, url_prefix="/api")

#: Longest long poll, in seconds: under common proxies' 60 s idle timeouts.
MAX_WAIT = 30.0
CSV_COLUMNS = ["id", "filename", "status", "label", "confidence", "model_version", "top_k",
               "error"]


@bp.post("/predictions")
@quotas.upload_route
def create_prediction():
    upload = request.files.get("image")
    if upload is None:
        raise UploadError("send the image as the multipart/form-data file field 'image'")
    prediction = predictions.submit_image(services(), limits(), data=upload.read(),
                                          filename=upload.filename, source=Source.API,
                                          visitor=None)
    url = url_for("api.read_prediction", prediction_id=prediction.id)
    body = _json(prediction) | {
        "url": url, "page_url": url_for("public.result", prediction_id=prediction.id)}
    return jsonify(body), 202, {"Location": url}


@bp.get("/predictions/<prediction_id>")
def read_prediction(prediction_id: str):
    """?wait=N holds the answer up to N seconds, until the result is there."""
    wait = _wait_seconds()
    prediction = predictions.wait_for(services(), prediction_id, wait)
    if prediction is None:
        abort(404, f"no prediction {prediction_id}")
    return jsonify(_json(prediction))


@bp.post("/batches")
@quotas.upload_route
def create_batch():
    """Images from 'images' fields and from a .zip in 'archive', as the page takes them."""
    sent = sent_files(request.files)
    files = sent.files(limits())
    if not files:
        raise UploadError("send images as file fields 'images', or a .zip as the field 'archive'")
    batch = predictions.submit_batch(services(), limits(), files=files, source=Source.API,
                                     visitor=None, name=sent.name)
    url = url_for("api.read_batch", batch_id=batch.id)
    body = predictions.batch_json(services(), batch) | {
        "url": url, "page_url": url_for("public.batch", batch_id=batch.id)}
    return jsonify(body), 202, {"Location": url}


@bp.get("/batches/<batch_id>")
def read_batch(batch_id: str):
    return jsonify(predictions.batch_json(services(), _batch(batch_id)))


@bp.get("/batches/<batch_id>/predictions")
def batch_predictions(batch_id: str):
    _batch(batch_id)
    return jsonify(predictions=[_json(p)
                                for p in predictions.batch_predictions(services(), batch_id)])


@bp.get("/batches/<batch_id>/results.json")
def batch_results_json(batch_id: str):
    batch = _batch(batch_id)
    body = predictions.batch_json(services(), batch) | {
        "predictions": [_json(p)
                        for p in predictions.batch_predictions(services(), batch_id)]}
    return attachment(predictions.dumps(body), f"batch-{batch_id}.json", "application/json")


@bp.get("/batches/<batch_id>/results.csv")
def batch_results_csv(batch_id: str):
    _batch(batch_id)
    return csv_attachment(f"batch-{batch_id}.csv", CSV_COLUMNS,
                          map(_csv_row, predictions.batch_predictions(services(), batch_id)))


@bp.get("/models")
def models():
    """The versions Serving reports for the model, and their states. Why Serving did
    not answer (its address, the connection's error) is for the log and for a
    logged-in administrator, not for anyone on the internet."""
    settings = services().settings
    try:
        versions = served_versions(settings)
    except ServingRequestError as exc:
        current_app.logger.warning("GET /api/models: Serving at %s did not answer: %s",
                                   settings.serving_url, exc.message)
        if not current_user.is_authenticated:
            abort(503, "the model server is unavailable")
        status = 404 if exc.status_code == 404 else 503
        abort(status, f"Serving at {settings.serving_url} did not answer: {exc.message}")
    return jsonify(model=settings.model_name, versions=[_version(v) for v in versions])


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())


def _json(p) -> dict[str, Any]:
    return predictions.prediction_json(p, uncertain_below=services().settings.uncertain_below)


def _version(status: dict[str, Any]) -> dict[str, Any]:
    error = status.get("status", {})
    return {"version": int(status["version"]), "state": status["state"],
            "error": error.get("error_message") or None}


def _csv_row(p) -> list:
    top = ";".join(f"{t['label']}:{t['score']:.4f}" for t in (p.top_k or []))
    return [p.id, predictions.csv_cell(p.filename), p.status, p.label or "",
            "" if p.confidence is None else f"{p.confidence:.4f}", p.model_version or "", top,
            p.error or ""]


def _batch(batch_id: str):
    batch = predictions.get_batch(services(), batch_id)
    if batch is None:
        abort(404, f"no batch {batch_id}")
    return batch


def _wait_seconds() -> float:
    raw = request.args.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        abort(400, f"wait must be a number of seconds, not {raw!r}")
    if not 0 <= wait <= MAX_WAIT:
        abort(400, f"wait must be between 0 and {MAX_WAIT:.0f} seconds")
    return wait
