"""Statistics: the records' figures from the database, the queue's from Redis, and
each recently answering version's drift from its validation split (core/rollout/drift.py)."""

from __future__ import annotations

from flask import abort, jsonify, render_template, request
from redis import RedisError
from rq import Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from core.rollout import drift
from frontend import queries, rollout
from frontend.admin import bp
from frontend.services import services


@bp.get("/stats")
def stats():
    settings = services().settings
    with services().db.session() as db:
        figures = queries.statistics(db)
        confusion = queries.confusion(db)
        drifts = drift.recent(db, settings)
        versions = _versions(db, settings)
    return render_template("admin/stats.html", s=figures, queue=_queue_state(),
                           confusion=confusion, drift=drifts, **versions)


@bp.get("/api/stats")
def api_stats():
    """The page's figures; `versions` are each version's in each role over `window`."""
    settings = services().settings
    with services().db.session() as db:
        figures = queries.statistics(db) | {"confusion": queries.confusion(db)}
        drifts = [d.as_json() for d in drift.recent(db, settings)]
        versions = _versions(db, settings)
    return jsonify(figures | {"queue": _queue_state(), "drift": drifts,
                              "window": versions["window"],
                              "versions": [f.as_json() for f in versions["figures"]]})


def _versions(db, settings) -> dict:
    try:
        return rollout.figures_for(db, settings, request.args.get("window"))
    except rollout.BadWindow as exc:
        abort(400, str(exc))


def _queue_state() -> dict:
    """Both prediction queues together: single uploads' and batch chunks'."""
    queues = services().queues
    try:
        return {
            "queued": sum(len(q) for q in queues),
            "running": sum(StartedJobRegistry(queue=q).count for q in queues),
            "scheduled": sum(ScheduledJobRegistry(queue=q).count for q in queues),
            "failed": sum(FailedJobRegistry(queue=q).count for q in queues),
            "workers": [{"name": w.name, "state": w.get_state(),
                         "job": w.get_current_job_id()} for w in Worker.all(queue=queues[0])],
            "error": None,
        }
    except RedisError as exc:
        return {"queued": None, "running": None, "scheduled": None, "failed": None,
                "workers": [], "error": f"Redis is unreachable: {exc}"}
