"""Starting, reading and cancelling training runs from the site (core/training.py
holds their life cycle; `python -m trainer worker` executes them).

The site only writes the run's row and enqueues its job by name: it never
imports the trainer, which needs TensorFlow. Errors are plain exceptions with
a sentence for the administrator; the routes choose the HTTP status.
"""

from __future__ import annotations

from typing import Any

from redis import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import training
from core.db import TrainingRun
from core.lifecycle.connections import Connections
from core.training import RunStatus
from frontend.predictions import iso

#: Seconds RQ keeps a finished job's return value: the run's row is the record.
RESULT_TTL = 60


class RunError(ValueError):
    """A run that cannot be started or changed, with a sentence that says why."""


class RunActive(RunError):
    pass


class NothingReviewed(RunError):
    pass


class QueueDown(RunError):
    pass


class RunFinished(RunError):
    pass


def start(svc: Connections, *, requested_by: str) -> TrainingRun:
    """A new queued run and its job. Refused while another run is active (the
    unique `active` flag decides between two administrators clicking at once) and
    when no record has been reviewed; a run whose job cannot be enqueued is failed
    at once, so it does not block the next one."""
    try:
        with svc.db.session() as session:
            training.reap(session, svc.settings)
            _refuse_if_active(session)
            if not session.scalar(select(func.count())
                                  .select_from(training.reviewed_photos().subquery())):
                raise NothingReviewed("review some records first: a run learns from the base "
                                      "photos plus the reviewed records, and there are none")
            run = TrainingRun(status=RunStatus.QUEUED, active=True, requested_by=requested_by)
            session.add(run)
    except IntegrityError:
        raise RunActive("another training run started just now; wait for it to finish "
                        "or cancel it") from None
    settings = svc.settings
    try:
        Queue(settings.training_queue, connection=svc.redis).enqueue(
            training.TASK, run.id, job_id=training.job_id(run.id),
            job_timeout=settings.training_timeout, result_ttl=RESULT_TTL)
    except RedisError as exc:
        with svc.db.session() as session:
            training.finish(session.get(TrainingRun, run.id), RunStatus.FAILED,
                            f"could not be queued: Redis is unreachable ({exc})")
        raise QueueDown(f"the training queue (Redis) is unreachable: {exc}; "
                        "nothing was started, try again once it is back") from None
    return run


def _refuse_if_active(session: Session) -> None:
    active = training.active_run(session)
    if active is not None:
        raise RunActive(f"run {active.id} is {active.status} already; wait for it to finish "
                        "or cancel it")


def runs(svc: Connections, limit: int = 50) -> list[TrainingRun]:
    """The newest runs first, after reaping those whose trainer worker died."""
    with svc.db.session() as session:
        training.reap(session, svc.settings)
    with svc.db.session() as session:
        return list(session.scalars(select(TrainingRun)
                                    .order_by(TrainingRun.created_at.desc(), TrainingRun.id)
                                    .limit(limit)))


def get(svc: Connections, run_id: str) -> TrainingRun | None:
    with svc.db.session() as session:
        training.reap(session, svc.settings)
    with svc.db.session() as session:
        return session.get(TrainingRun, run_id)


def cancel(svc: Connections, run_id: str) -> TrainingRun | None:
    """A queued run is cancelled and its job taken off the queue; a running one is
    asked to stop at its next progress report. None for an unknown run."""
    with svc.db.session() as session:
        training.reap(session, svc.settings)
    with svc.db.session() as session:
        run = session.get(TrainingRun, run_id)
        if run is None:
            return None
        if run.status not in training.ACTIVE:
            raise RunFinished(f"run {run_id} is {run.status} already: only a queued or "
                              "running run can be cancelled")
        was_queued = run.status == RunStatus.QUEUED
        training.request_cancel(session, run)
    if was_queued:
        try:
            Job.fetch(training.job_id(run_id), connection=svc.redis).delete()
        except NoSuchJobError:
            pass
        except RedisError:
            # The row says cancelled already; a trainer worker that still gets the
            # job must find it no longer queued and leave it.
            pass
    return run


def run_json(run: TrainingRun) -> dict[str, Any]:
    return {
        "id": run.id, "status": run.status, "phase": run.phase, "progress": run.progress,
        "eta_seconds": run.eta_seconds, "version": run.version, "message": run.message,
        "gate": run.gate, "base_images": run.base_images, "reviewed_images": run.reviewed_images,
        "requested_by": run.requested_by, "created_at": iso(run.created_at),
        "started_at": iso(run.started_at), "finished_at": iso(run.finished_at),
        "cancel_requested": run.cancel_requested,
    }


def note_promotion(svc: Connections, version: int, *, by: str) -> None:
    """Says on the run that trained `version` that an administrator promoted it."""
    with svc.db.session() as session:
        for run in session.scalars(select(TrainingRun).where(TrainingRun.version == version)):
            run.message = " ".join(filter(None, [run.message, f"Promoted by hand by {by}."]))
