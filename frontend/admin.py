"""The back office under /admin: records, review, statistics and models.

Every page but the login needs a logged-in administrator; /admin/api/* answers
401 JSON instead of redirecting. Failed logins are rate-limited per address.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import tempfile
import zipfile
from math import ceil
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from redis import RedisError
from rq import Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from sqlalchemy import select
from werkzeug.security import check_password_hash

from core.contract import version_folders
from core.db import Prediction, User, utcnow
from core.lifecycle.requeue import retry_failed as requeue_failed
from core.lifecycle.status import Status
from core.serving_client import ServingClient, ServingRequestError
from frontend import queries
from frontend.extensions import Admin, limiter, login_manager
from frontend.forms import LoginForm, LogoutForm, RetryForm, ReviewForm
from frontend.records import csv_cell, prediction_json
from frontend.services import services

bp = Blueprint("admin", __name__, url_prefix="/admin")

#: Every attempt counts, right or wrong: counting only failures would let
#: parallel guesses through before the first failure is counted.
LOGIN_LIMIT = "10 per minute;50 per hour"
#: Compared against when the user name is unknown, so both cases take as long.
_DUMMY_HASH = "scrypt:32768:8:1$0000000000000000$" + "0" * 128
MAX_PAGE = 10**6
REPORT_FILES = {"curves.png", "confusion_matrix.png", "metrics.json"}


@bp.before_request
def require_admin():
    if request.endpoint != "admin.login" and not current_user.is_authenticated:
        return login_manager.unauthorized()
    return None


@bp.app_context_processor
def logout_form():
    # formdata=None: built for every page, it must not read the request (a
    # page answering 413 would fail again on the body it refused).
    return {"logout_form": LogoutForm(formdata=None)}


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(LOGIN_LIMIT, methods=["POST"],
               error_message="too many login attempts; wait a minute and try again")
def login():
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("admin/login.html", form=form), 400 if form.is_submitted() else 200
    with services().db.session() as db:
        user = db.scalar(select(User).where(User.username == form.username.data))
        valid = check_password_hash(user.password_hash if user else _DUMMY_HASH,
                                    form.password.data)
        if not (user and valid):
            form.password.errors.append("wrong user name or password")
            return render_template("admin/login.html", form=form), 401
        user.last_login_at = utcnow()
    session.clear()  # a fresh session: no fixation
    login_user(Admin(user))
    target = request.args.get("next", "")
    return redirect(target if _local(target) else url_for("admin.records"), 303)


@bp.post("/logout")
def logout():
    if not LogoutForm().validate_on_submit():
        abort(400, "the logout form expired; reload the page")
    logout_user()
    session.clear()
    return redirect(url_for("admin.login"), 303)


@bp.get("/")
def records():
    flt, page = _filter(), _page()
    with services().db.session() as db:
        rows, total = queries.records(db, flt, page)
        labels, versions = queries.labels(db), queries.versions(db)
        failed = (queries.count(db, dataclasses.replace(flt, status=Status.FAILED))
                  if flt.status in ("", Status.FAILED) else 0)
    return render_template("admin/records.html", rows=rows, total=total, page=page,
                           pages=max(1, ceil(total / queries.PAGE_SIZE)), flt=flt,
                           labels=labels, versions=versions, failed=failed,
                           retry_form=RetryForm())


@bp.get("/records.csv")
def records_csv():
    flt = _filter()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "created_at", "source", "filename", "status", "label", "confidence",
                     "model_version", "seconds", "correct", "true_label", "error"])
    with services().db.session() as db:
        for p in queries.all_records(db, flt):
            writer.writerow([p.id, p.created_at.isoformat(), p.source, csv_cell(p.filename),
                             p.status,
                             p.label or "", "" if p.confidence is None else f"{p.confidence:.4f}",
                             p.model_version or "", "" if p.seconds is None else f"{p.seconds:.3f}",
                             "" if p.correct is None else p.correct,
                             csv_cell(p.true_label or ""), p.error or ""])
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="records.csv"'})


@bp.get("/records/<prediction_id>")
def record(prediction_id: str):
    p = _record(prediction_id)
    form = ReviewForm(verdict=("right" if p.correct else "wrong") if p.correct is not None
                      else None, true_label=p.true_label)
    return render_template("admin/record.html", p=p, form=form, retry_form=RetryForm())


@bp.post("/records/<prediction_id>/review")
def review(prediction_id: str):
    form = ReviewForm()
    p = _record(prediction_id)
    if p.label is None:
        abort(409, "only finished predictions with a label can be reviewed")
    if not form.validate_on_submit():
        return render_template("admin/record.html", p=p, form=form,
                               retry_form=RetryForm()), 400
    with services().db.session() as db:
        row = db.get(Prediction, prediction_id)
        row.correct = form.verdict.data == "right"
        row.true_label = row.label if row.correct else form.true_label.data.strip()
        row.reviewed_at = utcnow()
        row.reviewed_by = current_user.username
    flash(f"marked {'right' if row.correct else 'wrong'}: {row.true_label}")
    return redirect(url_for("admin.record", prediction_id=prediction_id), 303)


@bp.post("/records/<prediction_id>/retry")
def retry(prediction_id: str):
    """A failed record (Serving was down past the retry budget, say) queued again."""
    p = _record(prediction_id)
    if not RetryForm().validate_on_submit():
        abort(400, "the retry form expired; reload the page")
    if p.status != Status.FAILED:
        abort(409, f"only failed records can be retried; this one is {p.status}")
    if requeue_failed(services(), [prediction_id]):
        flash("queued again")
    return redirect(url_for("admin.record", prediction_id=prediction_id), 303)


@bp.post("/records/retry-failed")
def retry_failed():
    """Every failed record the list's filters select, queued again."""
    flt = _filter()
    if not RetryForm().validate_on_submit():
        abort(400, "the retry form expired; reload the page")
    count = 0
    if flt.status in ("", Status.FAILED):  # another status selects no failed record
        with services().db.session() as db:
            ids = list(db.scalars(dataclasses.replace(flt, status=Status.FAILED)
                                  .apply(select(Prediction.id))))
        count = requeue_failed(services(), ids)
    flash(f"{count} failed record{'s' if count != 1 else ''} queued again")
    return redirect(url_for("admin.records", **flt.query_args()), 303)


@bp.get("/review/export.zip")
def review_export():
    """Reviewed images as dataset/<true label>/<file>: the next training run's data."""
    svc = services()
    # On disk: thousands of photos do not fit in memory. send_file closes it.
    out = tempfile.TemporaryFile()  # noqa: SIM115
    count = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive, svc.db.session() as db:
        reviewed = db.scalars(select(Prediction).where(Prediction.true_label.is_not(None))
                              .order_by(Prediction.true_label, Prediction.created_at))
        seen: set[str] = set()
        for p in reviewed:
            name = f"dataset/{_folder(p.true_label)}/{p.image_sha256[:16]}.{p.image_format}"
            path = svc.store.path(p.image_sha256, p.image_format)
            if name in seen or not path.exists():
                continue
            seen.add(name)
            archive.write(path, name)
            count += 1
    if count == 0:
        out.close()
        abort(404, "no reviewed images yet: review some records first")
    out.seek(0)
    return send_file(out, mimetype="application/zip", as_attachment=True,
                     download_name="reviewed-dataset.zip")


@bp.get("/stats")
def stats():
    with services().db.session() as db:
        figures = queries.statistics(db)
    return render_template("admin/stats.html", s=figures, queue=_queue_state())


@bp.get("/models")
def models():
    settings = services().settings
    try:
        with ServingClient(settings.serving_url, settings.model_name, retries=0,
                           timeout=5) as client:
            versions, error = client.status(), None
    except ServingRequestError as exc:
        versions, error = [], exc.message
    reports = _reports()
    served = {int(v["version"]) for v in versions}
    return render_template("admin/models.html", versions=versions, error=error, reports=reports,
                           unserved=sorted(set(reports) - served, reverse=True),
                           model=settings.model_name, serving_url=settings.serving_url)


@bp.get("/models/<int:version>/<name>")
def report_file(version: int, name: str):
    if name not in REPORT_FILES:
        abort(404, f"no report file {name}")
    path = _reports_dir() / str(version) / name
    if not path.is_file():
        abort(404, f"version {version} has no {name}")
    return send_file(path)


@bp.get("/api/stats")
@login_required
def api_stats():
    with services().db.session() as db:
        figures = queries.statistics(db)
    return jsonify(figures | {"queue": _queue_state()})


@bp.get("/api/records")
@login_required
def api_records():
    flt, page = _filter(), _page()
    with services().db.session() as db:
        rows, total = queries.records(db, flt, page)
    return jsonify(total=total, page=page, page_size=queries.PAGE_SIZE,
                   records=[prediction_json(p) | {"correct": p.correct,
                                                  "true_label": p.true_label} for p in rows])


def _filter() -> queries.RecordFilter:
    try:
        return queries.RecordFilter.parse(request.args)
    except queries.FilterError as exc:
        abort(400, str(exc))


def _page() -> int:
    raw = request.args.get("page", "1")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_PAGE):
        abort(400, f"page must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def _record(prediction_id: str) -> Prediction:
    with services().db.session() as db:
        p = db.get(Prediction, prediction_id)
    if p is None:
        abort(404, f"no record {prediction_id}")
    return p


def _queue_state() -> dict:
    queue = services().queue
    try:
        return {
            "queued": len(queue),
            "running": StartedJobRegistry(queue=queue).count,
            "scheduled": ScheduledJobRegistry(queue=queue).count,
            "failed": FailedJobRegistry(queue=queue).count,
            "workers": [{"name": w.name, "state": w.get_state(),
                         "job": w.get_current_job_id()} for w in Worker.all(queue=queue)],
            "error": None,
        }
    except RedisError as exc:
        return {"queued": None, "running": None, "scheduled": None, "failed": None,
                "workers": [], "error": f"Redis is unreachable: {exc}"}


def _reports_dir():
    settings = services().settings
    return settings.model_base_path / settings.model_name / "reports"


def _reports() -> dict[int, dict]:
    found = {}
    root = _reports_dir()
    for version, folder in version_folders(root).items():
        metrics = folder / "metrics.json"
        if metrics.is_file():
            try:
                found[version] = json.loads(metrics.read_text())
            except (OSError, ValueError):
                continue
    return found


def _folder(label: str) -> str:
    """A class name fit for a folder name on any system."""
    return re.sub(r"[^\w.-]+", "_", label).strip("._") or "unlabelled"


def _local(target: str) -> bool:
    """A path on this site: browsers read "/\\evil.com" as "//evil.com", so no backslashes."""
    if not target.startswith("/") or "\\" in target or not target.isprintable():
        return False
    parts = urlsplit(target)
    return not target.startswith("//") and not parts.scheme and not parts.netloc
