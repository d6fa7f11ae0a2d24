"""No accepted upload is lost: records whose job never reached Redis (it was
down at upload time), expired or died with its worker are enqueued again.

Each worker runs a sweep every few seconds; a Redis lock held for the whole
sweep lets one of them do it at a time. Records are claimed with a guarded
UPDATE (still unfinished, still waiting for the same dead job), so a record
finished while the sweep ran is never reopened.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from datetime import timedelta

from redis.exceptions import LockError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty
from sqlalchemy import select, update

from core.db import Database, Prediction, Status, utcnow
from core.settings import Settings
from worker import jobs

log = logging.getLogger(__name__)

LOCK = "sweeper:lock"
#: Record statuses a job may still answer.
UNFINISHED = (Status.QUEUED, Status.RUNNING)


def sweep(db: Database, queue: Queue, settings: Settings, *,
          grace: timedelta = timedelta(seconds=10)) -> dict[str, int] | None:
    """One pass, unless another is running; returns how many records were
    enqueued again and failed (None if another sweep held the lock)."""
    lock = queue.connection.lock(LOCK, timeout=300, blocking=False)
    if not lock.acquire():
        return None
    try:
        return _sweep(db, queue, settings, grace)
    finally:
        with contextlib.suppress(LockError):
            lock.release()


def _sweep(db: Database, queue: Queue, settings: Settings,
           grace: timedelta) -> dict[str, int]:
    # Jobs of workers that died mid-job are failed (and retried) by RQ here,
    # in this sweep, instead of at the next worker's maintenance.
    # In this thread RQ's default SIGALRM timeout cannot guard the job's failure
    # callback (signals work in the main thread only), so the callback never ran.
    StartedJobRegistry(queue=queue, death_penalty_class=TimerDeathPenalty).cleanup()
    counts = {"enqueued": 0, "failed": 0}
    with db.session() as session:
        rows = session.execute(select(Prediction.id, Prediction.job_id, Prediction.attempts)
                               .where(Prediction.status.in_(UNFINISHED),
                                      Prediction.created_at < utcnow() - grace)
                               .order_by(Prediction.created_at)).all()
    waiting: dict[str | None, list[tuple[str, int]]] = defaultdict(list)
    for prediction_id, job_id, attempts in rows:
        waiting[job_id].append((prediction_id, attempts))
    for job_id, records in waiting.items():
        if job_id and _alive(queue, job_id):
            continue
        spent = [pid for pid, attempts in records if attempts > settings.job_retries]
        again = [pid for pid, attempts in records if attempts <= settings.job_retries]
        counts["failed"] += _fail(db, spent, job_id)
        for chunk in jobs.chunks(again, settings.chunk_size):
            claimed = _claim(db, chunk, job_id)
            if claimed:
                jobs.forget(queue, jobs.job_id(claimed))
                jobs.enqueue(queue, settings, claimed)
                counts["enqueued"] += len(claimed)
    if any(counts.values()):
        log.info("sweep: %(enqueued)d enqueued again, %(failed)d failed", counts)
    return counts


def _alive(queue: Queue, job_id: str) -> bool:
    try:
        status = Job.fetch(job_id, connection=queue.connection).get_status()
    except NoSuchJobError:
        return False
    if status == JobStatus.QUEUED:  # its hash may outlive its place in the queue
        return job_id in queue.get_job_ids()
    return status in jobs.ALIVE


def _claim(db: Database, ids: list[str], old_job_id: str | None) -> list[str]:
    """Points the records still waiting for the dead job at a new one; returns their ids."""
    new_job_id = jobs.job_id(ids)
    with db.session() as session:
        claimed = session.scalars(
            update(Prediction).where(*_still_waiting(ids, old_job_id))
            .values(job_id=new_job_id, status=Status.QUEUED).returning(Prediction.id)).all()
    order = {pid: i for i, pid in enumerate(ids)}
    claimed = sorted(claimed, key=order.__getitem__)
    if claimed and jobs.job_id(claimed) != new_job_id:  # the first id was finished meanwhile
        with db.session() as session:
            session.execute(update(Prediction).where(Prediction.id.in_(claimed))
                            .values(job_id=jobs.job_id(claimed)))
    return claimed


def _fail(db: Database, ids: list[str], old_job_id: str | None) -> int:
    if not ids:
        return 0
    with db.session() as session:
        result = session.execute(
            update(Prediction).where(*_still_waiting(ids, old_job_id))
            .values(status=Status.FAILED, finished_at=utcnow(),
                    error="the job classifying this image was lost too many times"))
    return result.rowcount


def _still_waiting(ids: list[str], old_job_id: str | None) -> tuple:
    """These records, if still unfinished and still waiting for that dead job:
    a record its job finished, or another sweep claimed, is left alone."""
    job = Prediction.job_id.is_(None) if old_job_id is None else Prediction.job_id == old_job_id
    return Prediction.id.in_(ids), Prediction.status.in_(UNFINISHED), job
