"""The pages visitors use: upload, result, batch progress, their own history, and
deleting their own uploads.

A browser may delete only what it sent (its session's `visitor`); anyone
else's id answers 404, as an unknown one does, so ids are never confirmed.
Images and thumbnails are `Cache-Control: private, no-store`: no shared cache
(a proxy) keeps a copy, and once deleted a photo is not in any cache either.
"""

from __future__ import annotations

import secrets

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from redis import RedisError
from sqlalchemy import text

from core import deletion, uncertainty
from core.db import Source
from frontend import predictions, quotas
from frontend.forms import DeleteForm
from frontend.services import limits, services
from frontend.thumbnails import thumbnail
from frontend.uploads import MIMETYPES, UploadError, sent_files

bp = Blueprint("public", __name__)

#: Images are someone's photos: never stored by a cache, shared or not.
IMAGE_CACHE_CONTROL = "private, no-store"


def visitor() -> str:
    """This browser's id, kept in the signed session cookie, for its history."""
    if "visitor" not in session:
        session["visitor"] = secrets.token_hex(16)
        session.permanent = True
    return session["visitor"]


@bp.get("/")
def index():
    return render_template("index.html", limits=limits())


@bp.post("/upload")
@quotas.upload_route
def upload():
    svc = services()
    sent = sent_files(request.files)
    try:
        if len(sent.images) == 1 and not sent.archives:
            [(filename, data)] = sent.images
            prediction = predictions.submit_image(svc, limits(), data=data, filename=filename,
                                                  source=Source.PAGE, visitor=visitor())
            return redirect(url_for("public.result", prediction_id=prediction.id), 303)
        files = sent.files(limits())
        if not files:
            raise UploadError("choose one or more images (or a .zip of them) first")
        batch = predictions.submit_batch(svc, limits(), files=files, source=Source.PAGE,
                                         visitor=visitor(), name=sent.name)
    except UploadError as exc:
        return render_template("index.html", limits=limits(), error=exc.message), exc.status
    return redirect(url_for("public.batch", batch_id=batch.id), 303)


@bp.get("/p/<prediction_id>")
def result(prediction_id: str):
    prediction = predictions.get_prediction(services(), prediction_id)
    if prediction is None:
        abort(404, "there is no such upload")
    unsure = (uncertainty.alternatives(prediction.top_k or [])
              if uncertainty.uncertain(prediction.confidence,
                                       services().settings.uncertain_below) else None)
    return render_template("result.html", p=prediction, unsure=unsure,
                           mine=_mine(prediction.visitor), delete_form=DeleteForm())


@bp.get("/batches/<batch_id>")
def batch(batch_id: str):
    svc = services()
    found = predictions.get_batch(svc, batch_id)
    if found is None:
        abort(404, "there is no such batch")
    return render_template("batch.html", batch=found, summary=predictions.batch_json(svc, found),
                           predictions=predictions.batch_predictions(svc, batch_id),
                           mine=_mine(found.visitor), delete_form=DeleteForm())


@bp.get("/history")
def history():
    mine = session.get("visitor")
    return render_template("history.html", predictions=predictions.history(services(), mine),
                           delete_form=DeleteForm())


@bp.post("/p/<prediction_id>/delete")
def delete_prediction(prediction_id: str):
    """This browser's upload: its record, and its image and thumbnail unless
    another upload of the same photo still needs them."""
    if not DeleteForm().validate_on_submit():
        abort(400, "the delete form expired; reload the page")
    done = deletion.delete_predictions(services(), [prediction_id], reason=deletion.UPLOADER,
                                       visitor=session.get("visitor"))
    if not done.records:
        abort(404, "there is no such upload")
    flash("Deleted: the image and its result are gone.")
    return redirect(url_for("public.history"), 303)


@bp.post("/batches/<batch_id>/delete")
def delete_batch(batch_id: str):
    """This browser's batch, every image of it."""
    if not DeleteForm().validate_on_submit():
        abort(400, "the delete form expired; reload the page")
    done = deletion.delete_batch(services(), batch_id, reason=deletion.UPLOADER,
                                 visitor=session.get("visitor"))
    if done is None:
        abort(404, "there is no such batch")
    flash(f"Deleted the batch: {done.records} image{'s' if done.records != 1 else ''}.")
    return redirect(url_for("public.history"), 303)


@bp.get("/images/<prediction_id>")
def image(prediction_id: str):
    p = _prediction(prediction_id)
    try:
        return _private(send_file(services().store.path(p.image_sha256, p.image_format),
                                  mimetype=MIMETYPES[p.image_format]))
    except FileNotFoundError:  # deleted since _prediction looked
        abort(404, "there is no such image")


@bp.get("/images/<prediction_id>/thumbnail")
def image_thumbnail(prediction_id: str):
    p = _prediction(prediction_id)
    try:
        path = thumbnail(services().store, p.image_sha256, p.image_format)
    except OSError:
        abort(404, "the image is no longer stored")
    return _private(send_file(path, mimetype="image/jpeg"))


@bp.get("/healthz")
def health():
    """Readiness for load balancers: the database and Redis answer. The body says
    which part is unavailable, never why: a driver's error names the software
    behind the site; the reason goes to the log."""
    svc = services()
    checks = {}
    try:
        with svc.db.session() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver's error means "not ready"
        _unavailable("the database", exc)
        checks["database"] = "unavailable"
    try:
        svc.redis.ping()
        checks["redis"] = "ok"
    except RedisError as exc:
        _unavailable("Redis", exc)
        checks["redis"] = "unavailable"
    healthy = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if healthy else "degraded", **checks), 200 if healthy else 503


def _private(response):
    response.headers["Cache-Control"] = IMAGE_CACHE_CONTROL
    return response


def _mine(visitor: str | None) -> bool:
    """Whether this browser sent it (and so may delete it)."""
    return visitor is not None and visitor == session.get("visitor")


def _unavailable(part: str, exc: Exception) -> None:
    # One line, no traceback: load balancers ask every few seconds while it lasts.
    current_app.logger.warning("/healthz: %s did not answer: %s: %s", part,
                               type(exc).__name__, exc)


def _prediction(prediction_id: str):
    p = predictions.get_prediction(services(), prediction_id)
    if p is None or not services().store.path(p.image_sha256, p.image_format).exists():
        abort(404, "there is no such image")
    return p
