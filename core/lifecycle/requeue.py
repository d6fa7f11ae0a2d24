"""Queueing records again: the sweep's lost jobs and an administrator's retry.

Both claim their records with one guarded UPDATE that points them at a new
job: only records still in the state the caller saw are taken, so a record
its job finished meanwhile, or that another sweep or administrator claimed
first, is left alone. Both run under the sweep lock: a sweep between a retry's
claim and its enqueue would take the new job for a lost one and queue the
records a second time.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from redis import Redis, RedisError
from redis.exceptions import LockError
from sqlalchemy import ColumnElement, update

from core.db import Database, Prediction
from core.lifecycle import jobs
from core.lifecycle.connections import Connections
from core.lifecycle.status import UNFINISHED, Status

log = logging.getLogger(__name__)

SWEEP_LOCK = "sweeper:lock"
#: Seconds the lock outlives a holder that died mid-sweep.
LOCK_TIMEOUT = 300


@contextmanager
def sweep_lock(redis: Redis, *, wait: float | None = None) -> Iterator[bool]:
    """Holds the sweep lock for the block; yields whether it was got. Without
    `wait` it is not waited for (another sweep runs: this one is not needed);
    with it, Redis down or the lock busy past `wait` seconds yields False."""
    lock = redis.lock(SWEEP_LOCK, timeout=LOCK_TIMEOUT, blocking=wait is not None,
                      blocking_timeout=wait)
    try:
        held = lock.acquire()
    except RedisError:
        if wait is None:
            raise
        held = False
    try:
        yield held
    finally:
        if held:
            with contextlib.suppress(RedisError, LockError):
                lock.release()


def failed(ids: Sequence[str]) -> tuple[ColumnElement[bool], ...]:
    """These records, if failed: what an administrator's retry takes."""
    return Prediction.id.in_(ids), Prediction.status == Status.FAILED


def waiting_for(ids: Sequence[str], dead_job_id: str | None) -> tuple[ColumnElement[bool], ...]:
    """These records, if still unfinished and still waiting for that dead job (or
    for none: Redis was down when they were made): what the sweep takes."""
    job = (Prediction.job_id.is_(None) if dead_job_id is None
           else Prediction.job_id == dead_job_id)
    return Prediction.id.in_(ids), Prediction.status.in_(UNFINISHED), job


#: What a retry resets: the record starts again with a fresh retry budget.
FRESH = {"error": None, "attempts": 0, "started_at": None, "finished_at": None}


def requeue(conns: Connections, ids: Sequence[str], which, *, enqueue: bool = True,
            reset: dict[str, Any] | None = None) -> int:
    """Claims the records `which(chunk)` selects, a chunk of CHUNK_SIZE at a time,
    points each chunk at one new job (two when it mixes batch records and single
    uploads, which have queues of their own), and enqueues it on its record's
    queue; returns how many were claimed. Call it holding the sweep lock. Redis
    down (or `enqueue=False`) leaves the claimed records queued: the next sweep,
    finding no job for them, enqueues them."""
    count = 0
    for chunk in jobs.chunks(list(ids), conns.settings.chunk_size):
        for batch_id, claimed in claim(conns.db, chunk, which(chunk), reset or {}):
            count += len(claimed)
            if not enqueue:
                continue
            queue = conns.queue_for(batch_id)
            try:
                jobs.forget(queue, jobs.job_id(claimed))
                jobs.enqueue(queue, conns.settings, claimed)
            except RedisError as exc:
                log.warning("Redis is unreachable (%s); the records claimed wait for the "
                            "next sweep", exc)
                enqueue = False
    return count


def claim(db: Database, ids: list[str], where: tuple[ColumnElement[bool], ...],
          reset: dict[str, Any]) -> list[tuple[str | None, list[str]]]:
    """Queues the records `where` selects; returns them as the jobs they now wait
    for: batch records apart from single uploads, each job as (a batch id of its
    records, or None for single uploads; their ids in the order given)."""
    new_job_id = jobs.job_id(ids)
    with db.session() as session:
        rows = session.execute(
            update(Prediction).where(*where)
            .values(status=Status.QUEUED, job_id=new_job_id, **reset)
            .returning(Prediction.id, Prediction.batch_id)).all()
        order = {pid: i for i, pid in enumerate(ids)}
        groups: dict[bool, tuple[str | None, list[str]]] = {}
        for pid, batch_id in sorted(rows, key=lambda row: order[row[0]]):
            groups.setdefault(batch_id is not None, (batch_id, []))[1].append(pid)
        for _, members in groups.values():
            if jobs.job_id(members) != new_job_id:  # its first was not claimed, or is apart
                session.execute(update(Prediction).where(Prediction.id.in_(members))
                                .values(job_id=jobs.job_id(members)))
    return list(groups.values())


def retry_failed(conns: Connections, ids: Sequence[str]) -> int:
    """An administrator's retry: failed records queued again with a fresh retry
    budget; returns how many. Two administrators retrying at once queue a record
    once. A sweep holding the lock past 15 s, or Redis down, leaves them queued
    for the sweep to enqueue."""
    with sweep_lock(conns.redis, wait=15) as held:
        return requeue(conns, ids, failed, enqueue=held, reset=FRESH)
