"""The back office's JSON actions under /admin/api/: reviews, deletions, training
runs and hand promotion, for the admin pages' scripts and for programs.

Programs authenticate with `Authorization: Bearer <token>` (frontend/tokens.py,
`flask create-token NAME`) and need no CSRF token; the pages' scripts use the
login session, and for them every POST carries the page's CSRF token in the
X-CSRFToken header. This blueprint is exempt from the site-wide CSRF check so
that the check below can tell the two apart: the administrator guard of
frontend/admin/__init__.py has run by then and knows which one it was.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, g, jsonify, request, url_for
from flask_login import current_user

from core import deletion, model_files
from core.contract import version_folders
from frontend import review, runs
from frontend.admin import bp
from frontend.admin.review_queue import queue_filter
from frontend.extensions import csrf
from frontend.predictions import record_json
from frontend.services import services

api = Blueprint("api", __name__, url_prefix="/api")
csrf.exempt(api)


@api.before_request
def csrf_unless_token():
    if current_app.config.get("WTF_CSRF_ENABLED", True) and not g.get("by_token"):
        csrf.protect()  # only methods in WTF_CSRF_METHODS (POST...) are checked


@api.post("/predictions/<prediction_id>/review")
def review_prediction(prediction_id: str):
    """{"label": "<class>"}: the predicted label means right, another class wrong."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "label" not in body:
        abort(400, 'send a JSON object {"label": "<class>"} with Content-Type: application/json')
    svc = services()
    try:
        with svc.db.session() as db:
            row = review.save(db, svc.settings, prediction_id, body["label"],
                              reviewer=current_user.username)
    except review.NotAnswered as exc:
        abort(409, str(exc))
    except review.ReviewRefused as exc:
        abort(400, str(exc))
    if row is None:
        abort(404, f"no record {prediction_id}")
    return jsonify(record_json(row, uncertain_below=svc.settings.uncertain_below))


@api.delete("/predictions/<prediction_id>")
def delete_prediction(prediction_id: str):
    """The record and, unless another record shares them, its image and thumbnail."""
    done = deletion.delete_predictions(services(), [prediction_id], visitor=deletion.ANYONE,
                                       reason=deletion.by_admin(current_user.username))
    if not done.records:
        abort(404, f"no record {prediction_id}")
    return jsonify(id=prediction_id, deleted=done.as_dict())


@api.delete("/batches/<batch_id>")
def delete_batch(batch_id: str):
    """The batch and every record of it."""
    done = deletion.delete_batch(services(), batch_id, visitor=deletion.ANYONE,
                                 reason=deletion.by_admin(current_user.username))
    if done is None:
        abort(404, f"no batch {batch_id}")
    return jsonify(id=batch_id, deleted=done.as_dict())


@api.get("/review-queue")
def review_queue():
    """The next records of the review queue page, with what its keys need."""
    svc = services()
    flt = queue_filter()
    with svc.db.session() as db:
        rows = review.queue(db, flt)
        records = [_queued(db, row) for row in rows]
        counts = review.reviewed_per_class(db)
        total = review.count(db, flt)
    return jsonify(records=records, total=total, reviewed_per_class=counts)


def _queued(db, row) -> dict:
    settings = services().settings
    return record_json(row, uncertain_below=settings.uncertain_below) | {
        "classes": review.classes(db, settings, row),
        "image_url": url_for("public.image", prediction_id=row.id),
        "record_url": url_for("admin.record", prediction_id=row.id),
        "margin": row.margin,
    }


@api.post("/training-runs")
def start_run():
    try:
        run = runs.start(services(), requested_by=current_user.username)
    except runs.RunActive as exc:
        abort(409, str(exc))
    except runs.NothingReviewed as exc:
        abort(400, str(exc))
    except runs.QueueDown as exc:
        abort(503, str(exc))
    url = url_for("admin.api.read_run", run_id=run.id)
    return jsonify(runs.run_json(run)), 202, {"Location": url}


@api.get("/training-runs")
def list_runs():
    return jsonify(runs=[runs.run_json(run) for run in runs.runs(services())])


@api.get("/training-runs/<run_id>")
def read_run(run_id: str):
    run = runs.get(services(), run_id)
    if run is None:
        abort(404, f"no training run {run_id}")
    return jsonify(runs.run_json(run))


@api.post("/training-runs/<run_id>/cancel")
def cancel_run(run_id: str):
    try:
        run = runs.cancel(services(), run_id)
    except runs.RunFinished as exc:
        abort(409, str(exc))
    if run is None:
        abort(404, f"no training run {run_id}")
    return jsonify(runs.run_json(run))


@api.post("/models/<int:version>/promote")
def promote(version: int):
    """A candidate the gate rejected, served by an administrator's decision."""
    svc = services()
    model = svc.settings.model_dir
    if version not in model_files.candidates(model) and version not in version_folders(model):
        abort(404, f"there is no candidate version {version}")
    try:
        model_files.promote(model, version)
    except model_files.PromotionError as exc:
        abort(409, str(exc))
    runs.note_promotion(svc, version, by=current_user.username)
    return jsonify(version=version, promoted=True,
                   message=f"version {version} is served now; Serving loads it within seconds")


bp.register_blueprint(api)
