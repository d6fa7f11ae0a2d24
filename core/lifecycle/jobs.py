"""The RQ jobs that classify predictions: their ids, how they are queued and told apart.

Jobs name their function by its import path, so the site enqueues without
importing the worker's code. A job's id is derived from its first prediction,
so the sweep can tell whether the job a record waits for still exists.
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


def retry_intervals(retries: int) -> list[int]:
    """One interval per retry. RQ reads the list from its end, `len - retries_left`,
    so a list shorter than the retries would repeat its first figure at the
    start; a longer one would skip the first figures."""
    return [RETRY_INTERVALS[min(i, len(RETRY_INTERVALS) - 1)] for i in range(retries)]


def enqueue(queue: Queue, settings: Settings, prediction_ids: Sequence[str]) -> str:
    """One job for these predictions (a single upload, or one chunk of a batch)."""
    retries = settings.job_retries
    retry = Retry(max=retries, interval=retry_intervals(retries)) if retries else None
    job = queue.enqueue(TASK, list(prediction_ids), job_id=job_id(prediction_ids),
                        job_timeout=settings.job_timeout, retry=retry,
                        on_failure=Callback(ON_FAILURE), result_ttl=3600,
                        failure_ttl=7 * 86400)
    return job.id


def forget(queue: Queue, job_id: str) -> None:
    """Deletes a dead job of that id (failed, or lost), so a new job of the same
    id starts with a clean slate instead of the old one's retries and registry."""
    with contextlib.suppress(NoSuchJobError):
        job = Job.fetch(job_id, connection=queue.connection)
        if job.get_status() not in ALIVE:
            job.delete()


def alive(connection: Redis, job_id: str) -> bool:
    """Whether that job will still run: it exists and is queued, started or waiting.
    A queued one is looked for in the queue it names (its origin), whichever of
    the two that is."""
    try:
        job = Job.fetch(job_id, connection=connection)
        status = job.get_status()
    except NoSuchJobError:
        return False
    if status == JobStatus.QUEUED:  # its hash may outlive its place in the queue
        return job_id in Queue(job.origin, connection=connection).get_job_ids()
    return status in ALIVE


def channel(prediction_id: str) -> str:
    """Redis pub/sub channel told when a prediction is finished (the site long-polls it)."""
    return f"prediction:{prediction_id}"
