"""No accepted upload is lost: records whose job never reached Redis (it was
down at upload time), expired or died with its worker are enqueued again.

Each worker runs a sweep every few seconds; a Redis lock lets one of them do it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections import defaultdict
from datetime import timedelta

from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import select, update

from core.db import Database, Prediction, Status, utcnow
from core.settings import Settings
from worker import jobs

log = logging.getLogger(__name__)

LOCK = "sweeper:lock"
#: A job in one of these states will still answer its records.
ALIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def sweep(db: Database, queue: Queue, settings: Settings, *,
          grace: timedelta = timedelta(seconds=10)) -> dict[str, int]:
    """One pass; returns how many records were enqueued again and failed."""
    counts = {"enqueued": 0, "failed": 0}
    cutoff = utcnow() - grace
    with db.session() as session:
        rows = session.execute(select(Prediction.id, Prediction.job_id, Prediction.attempts)
                               .where(Prediction.status.in_((Status.QUEUED, Status.RUNNING)),
                                      Prediction.created_at < cutoff)
                               .order_by(Prediction.created_at)).all()
    waiting: dict[str | None, list[tuple[str, int]]] = defaultdict(list)
    for prediction_id, job_id, attempts in rows:
        waiting[job_id].append((prediction_id, attempts))
    for job_id, records in waiting.items():
        if job_id and _status(queue, job_id) in ALIVE:
            continue
        spent = [pid for pid, attempts in records if attempts > settings.job_retries]
        again = [pid for pid, attempts in records if attempts <= settings.job_retries]
        if spent:
            counts["failed"] += _fail(db, spent)
        for chunk in jobs.chunks(again, settings.chunk_size):
            _forget(queue, jobs.job_id(chunk))
            with db.session() as session:
                session.execute(update(Prediction).where(Prediction.id.in_(chunk))
                                .values(job_id=jobs.job_id(chunk), status=Status.QUEUED))
            jobs.enqueue(queue, settings, chunk)
            counts["enqueued"] += len(chunk)
    if any(counts.values()):
        log.info("sweep: %(enqueued)d enqueued again, %(failed)d failed", counts)
    return counts


def sweep_if_first(db: Database, queue: Queue, settings: Settings, interval: float) -> None:
    """Sweeps unless another worker did within `interval` seconds."""
    if queue.connection.set(LOCK, secrets.token_hex(8), nx=True, ex=max(1, int(interval))):
        sweep(db, queue, settings)


def _status(queue: Queue, job_id: str) -> JobStatus | None:
    try:
        return Job.fetch(job_id, connection=queue.connection).get_status()
    except NoSuchJobError:
        return None


def _forget(queue: Queue, job_id: str) -> None:
    """Deletes a dead job of that id, so the new one starts with a clean slate."""
    with contextlib.suppress(NoSuchJobError):
        Job.fetch(job_id, connection=queue.connection).delete()


def _fail(db: Database, ids: list[str]) -> int:
    with db.session() as session:
        result = session.execute(
            update(Prediction).where(Prediction.id.in_(ids),
                                     Prediction.status.in_((Status.QUEUED, Status.RUNNING)))
            .values(status=Status.FAILED, finished_at=utcnow(),
                    error="the job classifying this image was lost too many times"))
    return result.rowcount
