"""Creating prediction records from uploads, and reading them back.

Every route (page, API, batch) comes through here, so an upload is always
checked before anything is stored, stored by content hash, recorded as
queued and committed, and only then enqueued. If Redis is down the record
simply stays queued: the workers' sweeper enqueues it once Redis is back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from redis import RedisError
from redis.exceptions import LockError
from sqlalchemy import func, select, update

from core.db import Batch, Prediction, Source, Status, new_id
from frontend.services import Services
from frontend.uploads import CheckedImage, UploadError, check_image
from worker import jobs
from worker.sweeper import LOCK as SWEEP_LOCK

log = logging.getLogger(__name__)

FINISHED = (Status.DONE, Status.FAILED)
#: Long polls one process holds at once; past this they answer at once, so
#: waiting pages never take every thread from uploads (gunicorn.conf.py: 16).
MAX_WAITERS = 8
_waiters = threading.BoundedSemaphore(MAX_WAITERS)


def submit_image(svc: Services, *, data: bytes, filename: str | None, source: Source,
                 visitor: str | None) -> Prediction:
    prediction = _record(svc, check_image(data, filename, svc.limits), source=source,
                         visitor=visitor)
    prediction.job_id = jobs.job_id([prediction.id])
    with svc.db.session() as session:
        session.add(prediction)
    _enqueue(svc, [prediction.id])
    return prediction


def submit_batch(svc: Services, *, files: Iterable[tuple[str | None, bytes | UploadError]],
                 source: Source, visitor: str | None, name: str | None = None) -> Batch:
    """Stores the images among the files; the others (and those refused already,
    given as their UploadError) are listed as rejected. Raises UploadError,
    storing nothing, if none is an image."""
    files = list(files)
    if len(files) > svc.settings.max_batch_images:
        raise UploadError(f"{len(files)} files; a batch holds at most "
                          f"{svc.settings.max_batch_images}", 413)
    accepted: list[CheckedImage] = []
    rejected: list[dict[str, str]] = []
    errors: list[UploadError] = []
    for filename, data in files:
        try:
            if isinstance(data, UploadError):
                raise data
            accepted.append(check_image(data, filename, svc.limits))
        except UploadError as exc:
            errors.append(exc)
            rejected.append({"name": filename or "upload", "error": exc.message})
    if not accepted:
        if not errors:
            raise UploadError("no files were sent")
        raise UploadError("; ".join(e.message for e in errors[:5]),
                          max(e.status for e in errors))
    # Files first, outside the transaction: SQLite's write lock is not held
    # while thousands of images are written.
    batch = Batch(id=new_id(), source=source, visitor=visitor, name=name, total=len(accepted),
                  rejected=rejected)
    predictions = [_record(svc, image, source=Source.BATCH, visitor=visitor, batch_id=batch.id)
                   for image in accepted]
    chunks = []
    for members in jobs.chunks(predictions, svc.settings.chunk_size):
        chunks.append([p.id for p in members])
        for p in members:
            p.job_id = jobs.job_id(chunks[-1])
    with svc.db.session() as session:
        session.add(batch)
        session.flush()  # the batch row before its predictions reference it
        session.add_all(predictions)
    for chunk in chunks:
        if not _enqueue(svc, chunk):
            break  # Redis is down: the sweeper enqueues the rest
    return batch


def _record(svc: Services, image: CheckedImage, *, source: Source, visitor: str | None,
            batch_id: str | None = None) -> Prediction:
    """Stores the image and makes its record (not yet added to a session)."""
    sha256 = svc.store.put(image.data, image.extension)
    prediction = Prediction(id=new_id(), source=source, visitor=visitor, batch_id=batch_id,
                            filename=image.filename, image_sha256=sha256,
                            image_format=image.extension, width=image.width,
                            height=image.height, size_bytes=len(image.data), status=Status.QUEUED)
    return prediction


def _enqueue(svc: Services, ids: Sequence[str]) -> bool:
    try:
        jobs.enqueue(svc.queue, svc.settings, ids)
        return True
    except RedisError as exc:
        log.warning("Redis is unreachable (%s); %d record(s) wait for the sweeper", exc, len(ids))
        return False


def retry(svc: Services, ids: Sequence[str]) -> int:
    """Queues failed records again, with a fresh retry budget; returns how many.

    Each chunk is claimed with a guarded update (still failed), so two
    administrators retrying at once queue a record once. The sweeper's lock is
    held meanwhile: a sweep between the claim and the enqueue would take the
    new job for a lost one and queue the records a second time. As with
    uploads, a Redis outage leaves the records queued for the sweeper."""
    count = 0
    lock = svc.queue.connection.lock(SWEEP_LOCK, timeout=120, blocking_timeout=15)
    try:
        # Not acquired in 15 s (a long sweep): the claimed records are left queued,
        # and the sweeper, finding no live job for them, enqueues them itself.
        redis_up = lock.acquire()
    except RedisError:
        redis_up = False  # no sweep runs either
    try:
        for chunk in jobs.chunks(list(ids), svc.settings.chunk_size):
            claimed = _claim_failed(svc, chunk)
            count += len(claimed)
            if claimed and redis_up:
                with contextlib.suppress(RedisError):  # _enqueue below logs the outage
                    jobs.forget(svc.queue, jobs.job_id(claimed))
                redis_up = _enqueue(svc, claimed)
    finally:
        with contextlib.suppress(RedisError, LockError):
            lock.release()
    return count


def _claim_failed(svc: Services, chunk: list[str]) -> list[str]:
    with svc.db.session() as session:
        claimed = session.scalars(
            update(Prediction)
            .where(Prediction.id.in_(chunk), Prediction.status == Status.FAILED)
            .values(status=Status.QUEUED, error=None, attempts=0, started_at=None,
                    finished_at=None)
            .returning(Prediction.id)).all()
        claimed = sorted(claimed, key=chunk.index)
        if claimed:
            session.execute(update(Prediction).where(Prediction.id.in_(claimed))
                            .values(job_id=jobs.job_id(claimed)))
    return claimed


def get_prediction(svc: Services, prediction_id: str) -> Prediction | None:
    with svc.db.session() as session:
        return session.get(Prediction, prediction_id)


def wait_for(svc: Services, prediction_id: str, timeout: float) -> Prediction | None:
    """The record once finished, or as it is after `timeout` seconds (a long poll).
    Workers publish on the record's channel; subscribing before the first read
    means a result written in between is not missed."""
    prediction = get_prediction(svc, prediction_id)
    if prediction is None or prediction.status in FINISHED or timeout <= 0:
        return prediction
    if not _waiters.acquire(blocking=False):  # every thread waiting: answer now
        return prediction
    try:
        return _wait(svc, prediction, timeout)
    finally:
        _waiters.release()


def _wait(svc: Services, prediction: Prediction, timeout: float) -> Prediction:
    prediction_id = prediction.id
    deadline = time.monotonic() + timeout
    try:
        with svc.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            pubsub.subscribe(jobs.channel(prediction_id))
            prediction = get_prediction(svc, prediction_id)
            while prediction.status not in FINISHED and (left := deadline - time.monotonic()) > 0:
                pubsub.get_message(timeout=min(left, 1.0))  # a message, or a second passed
                prediction = get_prediction(svc, prediction_id)
    except RedisError:
        while prediction.status not in FINISHED and time.monotonic() < deadline:
            time.sleep(0.5)
            prediction = get_prediction(svc, prediction_id)
    return prediction


def prediction_json(p: Prediction) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": p.id, "status": p.status, "filename": p.filename, "source": p.source,
        "batch_id": p.batch_id, "created_at": _iso(p.created_at),
        "width": p.width, "height": p.height, "size_bytes": p.size_bytes,
    }
    if p.status == Status.DONE:
        body |= {"label": p.label, "confidence": p.confidence, "top_k": p.top_k,
                 "model_version": p.model_version, "finished_at": _iso(p.finished_at),
                 "seconds": p.seconds, "serving_ms": p.serving_ms}
    elif p.status == Status.FAILED:
        body |= {"error": p.error, "finished_at": _iso(p.finished_at)}
    return body


def get_batch(svc: Services, batch_id: str) -> Batch | None:
    with svc.db.session() as session:
        return session.get(Batch, batch_id)


def batch_predictions(svc: Services, batch_id: str) -> list[Prediction]:
    with svc.db.session() as session:
        return list(session.scalars(select(Prediction).where(Prediction.batch_id == batch_id)
                                    .order_by(Prediction.created_at, Prediction.filename)))


def batch_json(svc: Services, batch: Batch) -> dict[str, Any]:
    with svc.db.session() as session:
        statuses = dict(session.execute(
            select(Prediction.status, func.count()).where(Prediction.batch_id == batch.id)
            .group_by(Prediction.status)).all())
        labels = dict(session.execute(
            select(Prediction.label, func.count()).where(Prediction.batch_id == batch.id,
                                                         Prediction.status == Status.DONE)
            .group_by(Prediction.label)).all())
    counts = {status.value: statuses.get(status.value, 0) for status in Status}
    finished = counts[Status.DONE] + counts[Status.FAILED]
    return {
        "id": batch.id, "name": batch.name, "created_at": _iso(batch.created_at),
        "total": batch.total, "counts": counts, "finished": finished,
        "progress": finished / batch.total if batch.total else 1.0,
        "complete": finished == batch.total,
        "labels": dict(Counter(labels).most_common()), "rejected": batch.rejected,
    }


def history(svc: Services, visitor: str | None, limit: int = 50) -> list[Prediction]:
    if not visitor:
        return []
    with svc.db.session() as session:
        return list(session.scalars(select(Prediction).where(Prediction.visitor == visitor)
                                    .order_by(Prediction.created_at.desc()).limit(limit)))


def _iso(moment) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds") + "Z"


def csv_cell(text: str) -> str:
    """A user's text for a CSV cell that a spreadsheet will not run as a formula."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
