"""The retention purge: uploads older than RETENTION_DAYS are deleted, with their
images and thumbnails (core/deletion.py), reviewed ones only if
RETENTION_KEEP_REVIEWED is false, since they are what training learns from.

Every long-running worker asks once a minute (or every RETENTION_INTERVAL
seconds, if shorter) whether a purge is due: a Redis key that lives
RETENTION_INTERVAL seconds is set by the first worker to ask after it expired,
so the workers together purge once an interval, however many there are and
however often they restart. The purge itself holds a lock, so a long one is
never run twice at once, and deletes in chunks of core.deletion.CHUNK records,
each its own short transaction.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from redis import Redis, RedisError
from redis.exceptions import LockError
from sqlalchemy import ColumnElement, func, select

from core import deletion
from core.db import Prediction, utcnow
from core.lifecycle.connections import Connections
from core.settings import Settings

log = logging.getLogger(__name__)

DUE_KEY = "retention:due"
LOCK_KEY = "retention:lock"
#: Seconds the lock outlives a purge that died; renewed after every chunk.
LOCK_TIMEOUT = 300
#: The longest wait between two questions "is a purge due?".
CHECK_EVERY = 60.0


def expired(settings: Settings, now: datetime | None = None) -> list[ColumnElement[bool]]:
    """The records past the retention period (none when it is 0: keep everything)."""
    if settings.retention_days == 0:
        return [Prediction.id.is_(None)]
    cutoff = (now or utcnow()) - timedelta(days=settings.retention_days)
    where = [Prediction.created_at < cutoff]
    if settings.retention_keep_reviewed:
        where.append(Prediction.reviewed_at.is_(None))
    return where


def purge(conns: Connections, *, dry_run: bool = False,
          now: datetime | None = None) -> dict[str, Any] | None:
    """Deletes every expired record (with `dry_run`, only counts them); None if
    another purge holds the lock."""
    where = expired(conns.settings, now)
    if dry_run:
        with conns.db.session() as session:
            count, oldest = session.execute(
                select(func.count(), func.min(Prediction.created_at)).where(*where)).one()
        return {"would_delete": count, "oldest": oldest.isoformat() if oldest else None}
    with _lock(conns.redis) as lock:
        if lock is None:
            return None
        done = deletion.Deleted()
        while True:
            with conns.db.session() as session:
                ids = list(session.scalars(select(Prediction.id).where(*where)
                                           .order_by(Prediction.created_at)
                                           .limit(deletion.CHUNK)))
            if not ids:
                break
            chunk = deletion.delete_predictions(conns, ids, reason=deletion.RETENTION,
                                                visitor=deletion.ANYONE)
            done.add(chunk)
            lock.reacquire()
            if chunk.records == 0:  # deleted by someone else meanwhile: look again next time
                break
    if done.records:
        log.info("retention: purged %(records)d records, %(batches)d batches, %(images)d "
                 "images, %(thumbnails)d thumbnails; %(manifests)d run manifests noted",
                 done.as_dict())
    return done.as_dict()


@contextmanager
def _lock(redis: Redis) -> Iterator[Any]:
    lock = redis.lock(LOCK_KEY, timeout=LOCK_TIMEOUT, blocking=False)
    held = lock.acquire()
    try:
        yield lock if held else None
    finally:
        if held:
            with contextlib.suppress(RedisError, LockError):
                lock.release()


def due(redis: Redis, interval: int) -> bool:
    """True for the one caller that starts this interval's purge."""
    return bool(redis.set(DUE_KEY, "1", nx=True, ex=interval))


def start_purging(conns: Connections) -> None:
    """A thread of this worker purging whenever a purge is due; none when
    RETENTION_DAYS is 0."""
    interval = conns.settings.retention_interval
    if conns.settings.retention_days == 0:
        return

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(min(interval, CHECK_EVERY)):
            try:
                if due(conns.redis, interval):
                    purge(conns)
            except RedisError as exc:  # an outage: the next check tries again
                log.warning("retention purge skipped, Redis is unreachable: %s", exc)
            except Exception:  # a purge failing must not stop the worker
                log.exception("retention purge failed")

    threading.Thread(target=loop, name="retention", daemon=True).start()
