"""No accepted upload is lost: records whose job never reached Redis (it was
down at upload time), expired or died with its worker are enqueued again.

Each worker runs a sweep every few seconds; the sweep lock lets one of them
do it at a time. A record that has been requeued more often than the retry
budget allows is failed instead, with a reason its user can read.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta

from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty
from sqlalchemy import select, update

from core.db import Database, Prediction, utcnow
from core.lifecycle import jobs
from core.lifecycle.connections import Connections
from core.lifecycle.requeue import requeue, sweep_lock, waiting_for
from core.lifecycle.status import UNFINISHED, Status

log = logging.getLogger(__name__)


def sweep(conns: Connections, *, grace: timedelta = timedelta(seconds=10)
          ) -> dict[str, int] | None:
    """One pass, unless another is running; returns how many records were
    enqueued again and failed (None if another sweep held the lock)."""
    with sweep_lock(conns.redis) as held:
        return _sweep(conns, grace) if held else None


def _sweep(conns: Connections, grace: timedelta) -> dict[str, int]:
    # Jobs of workers that died mid-job are failed (and retried) by RQ here,
    # in this sweep, instead of at the next worker's maintenance. In this
    # thread RQ's default SIGALRM timeout cannot guard the job's failure
    # callback (signals work in the main thread only), hence the timer.
    for queue in conns.queues:
        StartedJobRegistry(queue=queue, death_penalty_class=TimerDeathPenalty).cleanup()
    counts = {"enqueued": 0, "failed": 0}
    with conns.db.session() as session:
        rows = session.execute(select(Prediction.id, Prediction.job_id, Prediction.attempts)
                               .where(Prediction.status.in_(UNFINISHED),
                                      Prediction.created_at < utcnow() - grace)
                               .order_by(Prediction.created_at)).all()
    waiting: dict[str | None, list[tuple[str, int]]] = defaultdict(list)
    for prediction_id, job_id, attempts in rows:
        waiting[job_id].append((prediction_id, attempts))
    budget = conns.settings.job_retries
    for job_id, records in waiting.items():
        if job_id and jobs.alive(conns.redis, job_id):
            continue
        spent = [pid for pid, attempts in records if attempts > budget]
        again = [pid for pid, attempts in records if attempts <= budget]
        counts["failed"] += _fail(conns.db, spent, job_id)
        counts["enqueued"] += requeue(conns, again,
                                      lambda chunk, dead=job_id: waiting_for(chunk, dead))
    if any(counts.values()):
        log.info("sweep: %(enqueued)d enqueued again, %(failed)d failed", counts)
    return counts


def _fail(db: Database, ids: list[str], dead_job_id: str | None) -> int:
    if not ids:
        return 0
    with db.session() as session:
        result = session.execute(
            update(Prediction).where(*waiting_for(ids, dead_job_id))
            .values(status=Status.FAILED, finished_at=utcnow(),
                    error="the job classifying this image was lost too many times"))
    return result.rowcount
