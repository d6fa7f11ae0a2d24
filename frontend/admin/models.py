"""The model: the versions Serving reports, the training reports beside them,
the candidates waiting for a hand promotion, and the training runs (started and
followed by static/models.js through frontend/admin/api.py)."""

from __future__ import annotations

from flask import abort, render_template, request, send_file

from core import model_files
from core.rollout import drift
from core.rollout import store as rollout_store
from core.serving_client import ServingRequestError
from core.training import ACTIVE
from frontend import model_history, rollout, runs
from frontend.admin import bp
from frontend.services import services
from frontend.versions import REPORT_FILES, report_path, reports, served_versions


@bp.get("/models")
def models():
    svc = services()
    settings = svc.settings
    try:
        versions, error = served_versions(settings), None
    except ServingRequestError as exc:
        versions, error = [], exc.message
    found = reports(settings)
    served = {int(v["version"]) for v in versions}
    recent = runs.runs(svc)
    candidates = model_files.candidates(svc.settings.model_dir)
    with svc.db.session() as db:
        live = model_history.live_accuracy(db)
        by_version = model_history.runs_by_version(db)
        rolled = _rollout(db, settings)
    history = {v: {"origin": model_history.origin(found.get(v), by_version.get(v)),
                   "gate": model_history.gate_rows(by_version[v].gate if v in by_version
                                                   else None),
                   "live": live.get(v),
                   "changes": model_history.class_changes(found, v)}
               for v in sorted(set(found) | served | set(candidates) | set(by_version),
                               reverse=True)}
    return render_template("admin/models.html", versions=versions, error=error, reports=found,
                           unserved=sorted(set(found) - served - set(candidates), reverse=True),
                           candidates=candidates, history=history, runs=recent,
                           active=next((r for r in recent if r.status in ACTIVE), None),
                           model=settings.model_name, serving_url=settings.serving_url,
                           **rolled)


def _rollout(db, settings) -> dict:
    """What the roll-out section shows (templates/admin/_rollout.html)."""
    try:
        shown = rollout.figures_for(db, settings, request.args.get("window"))
    except rollout.BadWindow as exc:
        abort(400, str(exc))
    stored = rollout_store.load(db)
    shadow = stored.state.shadow
    return shown | {
        "rollout": stored,
        "comparison": rollout.comparison(db, stored, uncertain_below=settings.uncertain_below),
        "shadow_agreement": rollout.shadow_agreement(db, shadow) if shadow else {},
        "events": rollout_store.events(db), "rules": settings.rollout,
        "drift": drift.recent(db, settings),
        "shadow_share": settings.rollout.shadow_share,
        "auto_canary_share": settings.rollout.auto_canary_share}


@bp.get("/models/<int:version>/<name>")
def report_file(version: int, name: str):
    if name not in REPORT_FILES:
        abort(404, f"no report file {name}")
    path = report_path(services().settings, version, name)
    if not path.is_file():
        abort(404, f"version {version} has no {name}")
    return send_file(path)
