"""The pages visitors use: upload, result, batch progress, their own history."""

from __future__ import annotations

import secrets

from flask import (
    Blueprint,
    abort,
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

from core import uncertainty
from core.db import Source
from frontend import predictions, quotas
from frontend.services import limits, services
from frontend.thumbnails import thumbnail
from frontend.uploads import MIMETYPES, UploadError, sent_files

bp = Blueprint("public", __name__)


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
    return render_template("result.html", p=prediction, unsure=unsure)


@bp.get("/batches/<batch_id>")
def batch(batch_id: str):
    svc = services()
    found = predictions.get_batch(svc, batch_id)
    if found is None:
        abort(404, "there is no such batch")
    return render_template("batch.html", batch=found, summary=predictions.batch_json(svc, found),
                           predictions=predictions.batch_predictions(svc, batch_id))


@bp.get("/history")
def history():
    mine = session.get("visitor")
    return render_template("history.html", predictions=predictions.history(services(), mine))


@bp.get("/images/<prediction_id>")
def image(prediction_id: str):
    p = _prediction(prediction_id)
    return send_file(services().store.path(p.image_sha256, p.image_format),
                     mimetype=MIMETYPES[p.image_format], max_age=86400)


@bp.get("/images/<prediction_id>/thumbnail")
def image_thumbnail(prediction_id: str):
    p = _prediction(prediction_id)
    try:
        path = thumbnail(services().store, p.image_sha256, p.image_format)
    except OSError:
        abort(404, "the image is no longer stored")
    return send_file(path, mimetype="image/jpeg", max_age=86400)


@bp.get("/healthz")
def health():
    """Readiness for load balancers: the database and Redis answer."""
    svc = services()
    checks = {}
    try:
        with svc.db.session() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver's error means "not ready"
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        svc.redis.ping()
        checks["redis"] = "ok"
    except RedisError as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if healthy else "degraded", **checks), 200 if healthy else 503


def _prediction(prediction_id: str):
    p = predictions.get_prediction(services(), prediction_id)
    if p is None or not services().store.path(p.image_sha256, p.image_format).exists():
        abort(404, "there is no such image")
    return p
