"""Statistics: the records' figures from the database, the queue's from Redis, and
each recently answering version's drift from its validation split (core/rollout/drift.py)."""

from __future__ import annotations

from flask import jsonify, render_template
from redis import RedisError
from rq import Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from core.rollout import drift
from frontend import queries
from frontend.admin import bp
from frontend.services import services


@bp.get("/stats")
def stats():
    with services().db.session() as db:
        figures = queries.statistics(db)
        confusion = queries.confusion(db)
        drifts = drift.recent(db, services().settings)
    return render_template("admin/stats.html", s=figures, queue=_queue_state(),
                           confusion=confusion, drift=drifts)


@bp.get("/api/stats")
def api_stats():
    with services().db.session() as db:
        figures = queries.statistics(db) | {"confusion": queries.confusion(db)}
        drifts = [d.as_json() for d in drift.recent(db, services().settings)]
    return jsonify(figures | {"queue": _queue_state(), "drift": drifts})


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
