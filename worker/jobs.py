"""Putting predictions on the queue: the site enqueues, the sweeper re-enqueues.

Jobs name their function by its import path, so the site enqueues without
importing worker.tasks. A job's id is derived from its first prediction, so
the sweeper can tell whether the job a record waits for still exists.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TypeVar

from redis import Redis
from rq import Callback, Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from core.settings import Settings

T = TypeVar("T")

TASK = "worker.tasks.predict"
ON_FAILURE = "worker.tasks.on_failure"
#: Seconds between a failed job's retries: Serving restarting takes seconds,
#: a redeployment a minute or two. More retries than this wait the last figure.
RETRY_INTERVALS = [1, 3, 10, 30, 60]
#: A job in one of these states will still answer its records.
ALIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def job_id(prediction_ids: Sequence[str]) -> str:
    return f"predict-{prediction_ids[0]}"


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def connect(settings: Settings, *, socket_timeout: float | None = 10) -> Redis:
    """A connection that fails fast: an upload must not hang on a dead Redis."""
    return Redis.from_url(settings.redis_url, socket_connect_timeout=2,
                          socket_timeout=socket_timeout, health_check_interval=30)


def queue(settings: Settings, connection: Redis | None = None) -> Queue:
    return Queue(settings.queue_name, connection=connection or connect(settings))


def enqueue(q: Queue, settings: Settings, prediction_ids: Sequence[str]) -> str:
    """One job for these predictions (a single upload, or one chunk of a batch)."""
    retries = settings.job_retries
    intervals = RETRY_INTERVALS[:retries] + RETRY_INTERVALS[-1:] * (retries - len(RETRY_INTERVALS))
    retry = Retry(max=retries, interval=intervals) if retries else None
    job = q.enqueue(TASK, list(prediction_ids), job_id=job_id(prediction_ids),
                    job_timeout=settings.job_timeout, retry=retry,
                    on_failure=Callback(ON_FAILURE), result_ttl=3600, failure_ttl=7 * 86400)
    return job.id


def forget(q: Queue, job_id: str) -> None:
    """Deletes a dead job of that id (failed, or lost), so a new job of the same
    id starts with a clean slate instead of the old one's retries and registry."""
    with contextlib.suppress(NoSuchJobError):
        job = Job.fetch(job_id, connection=q.connection)
        if job.get_status() not in ALIVE:
            job.delete()


def channel(prediction_id: str) -> str:
    """Redis pub/sub channel told when a prediction is finished (the site long-polls it)."""
    return f"prediction:{prediction_id}"
