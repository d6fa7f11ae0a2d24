"""Creating prediction records from uploads, and reading them back.

Every route (page, API, batch) comes through here, so an upload is always
checked before anything is stored, stored by content hash, recorded as
queued and committed, and only then enqueued (core/lifecycle). If Redis is
down the record simply stays queued: the workers' sweep enqueues it once
Redis is back. If the database refuses the records, the files this upload
added are removed again and it is answered 503.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from redis import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from core.db import Batch, Prediction, Source, new_id
from core.lifecycle import jobs
from core.lifecycle.connections import Connections
from core.lifecycle.status import FINISHED, Status
from core.uncertainty import uncertain
from frontend.uploads import CheckedImage, Limits, UploadError, check_image, display_name

log = logging.getLogger(__name__)

#: Long polls one process holds at once; past this they answer at once, so
#: waiting pages never take every thread from uploads (gunicorn.conf.py: 16).
MAX_WAITERS = 8
_waiters = threading.BoundedSemaphore(MAX_WAITERS)


def submit_image(svc: Connections, limits: Limits, *, data: bytes, filename: str | None,
                 source: Source, visitor: str | None) -> Prediction:
    image = check_image(data, filename, limits)
    with _files_for_records(svc) as put:
        prediction = _record(put, image, source=source, visitor=visitor)
        prediction.job_id = jobs.job_id([prediction.id])
        with svc.db.session() as session:
            session.add(prediction)
    _enqueue(svc, [prediction.id])
    return prediction


def submit_batch(svc: Connections, limits: Limits, *,
                 files: Iterable[tuple[str | None, bytes | UploadError]], source: Source,
                 visitor: str | None, name: str | None = None) -> Batch:
    """Stores the images among the files; the others (and those refused already,
    given as their UploadError) are listed as rejected. Raises UploadError,
    storing nothing, if none is an image."""
    files = list(files)
    if len(files) > limits.batch_images:
        raise UploadError(f"{len(files):,} files; a batch holds at most "
                          f"{limits.batch_images:,}", 413)
    accepted: list[CheckedImage] = []
    rejected: list[dict[str, str]] = []
    errors: list[UploadError] = []
    for filename, data in files:
        try:
            if isinstance(data, UploadError):
                raise data
            accepted.append(check_image(data, filename, limits))
        except UploadError as exc:
            errors.append(exc)
            rejected.append({"name": display_name(filename), "error": exc.message})
    if not accepted:
        if not errors:
            raise UploadError("no files were sent")
        raise UploadError("; ".join(e.message for e in errors[:5]),
                          max(e.status for e in errors))
    # Files first, outside the transaction: SQLite's write lock is not held
    # while thousands of images are written.
    batch = Batch(id=new_id(), source=source, visitor=visitor, name=name, total=len(accepted),
                  rejected=rejected)
    with _files_for_records(svc) as put:
        predictions = [_record(put, image, source=Source.BATCH, visitor=visitor,
                               batch_id=batch.id) for image in accepted]
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
        if not _enqueue(svc, chunk, batch.id):
            break  # Redis is down: the sweep enqueues the rest
    return batch


@contextmanager
def _files_for_records(svc: Connections) -> Iterator[Callable[[CheckedImage], str]]:
    """A `put` storing images for the records the block then writes. If the block
    fails (the database refuses the records), the files it added are removed
    again, and a database failure is answered 503: nothing of the upload is kept.

    The store is content-addressed, so a file is this upload's only if it was not
    there before its put; files that were stay, whatever happens. A file added
    here that another upload of the same photo recorded meanwhile stays too: the
    database is asked which are referenced, and only if it cannot answer either
    (an outage: no other upload records anything then) are all of them removed."""
    added: dict[str, str] = {}

    def put(image: CheckedImage) -> str:
        # The store hashes too (1 ms a MB): its put does not say whether the file was new.
        sha256 = hashlib.sha256(image.data).hexdigest()
        if not svc.store.path(sha256, image.extension).exists():
            added[sha256] = image.extension
        return svc.store.put(image.data, image.extension)

    try:
        yield put
    except BaseException as exc:
        _remove_unreferenced(svc, added)
        if not isinstance(exc, SQLAlchemyError):
            raise
        log.error("the database refused an upload's records; its %d new file(s) were "
                  "removed", len(added), exc_info=exc)
        raise UploadError("the database is not taking uploads right now, so nothing was "
                          "kept; try again in a minute", 503) from None


def _remove_unreferenced(svc: Connections, added: dict[str, str]) -> None:
    if not added:
        return
    try:
        with svc.db.session() as session:
            referenced = set(session.scalars(select(Prediction.image_sha256).where(
                Prediction.image_sha256.in_(list(added)))))
    except SQLAlchemyError:
        referenced = set()
    for sha256, extension in added.items():
        if sha256 not in referenced:
            svc.store.remove(sha256, extension)


def _record(put: Callable[[CheckedImage], str], image: CheckedImage, *, source: Source,
            visitor: str | None, batch_id: str | None = None) -> Prediction:
    """Stores the image and makes its record (not yet added to a session)."""
    sha256 = put(image)
    prediction = Prediction(id=new_id(), source=source, visitor=visitor, batch_id=batch_id,
                            filename=image.filename, image_sha256=sha256,
                            image_format=image.extension, width=image.width,
                            height=image.height, size_bytes=len(image.data), status=Status.QUEUED)
    return prediction


def _enqueue(svc: Connections, ids: Sequence[str], batch_id: str | None = None) -> bool:
    """One job on its queue: a batch's chunks on the batch queue, behind which no
    single upload waits (core/lifecycle/connections.py)."""
    try:
        jobs.enqueue(svc.queue_for(batch_id), svc.settings, ids)
        return True
    except RedisError as exc:
        log.warning("Redis is unreachable (%s); %d record(s) wait for the sweep", exc, len(ids))
        return False


def get_prediction(svc: Connections, prediction_id: str) -> Prediction | None:
    with svc.db.session() as session:
        return session.get(Prediction, prediction_id)


def wait_for(svc: Connections, prediction_id: str, timeout: float) -> Prediction | None:
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


def _wait(svc: Connections, prediction: Prediction, timeout: float) -> Prediction:
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


def prediction_json(p: Prediction, *, uncertain_below: float) -> dict[str, Any]:
    """The API's body for a record; an answer under `uncertain_below` (the
    setting) is `uncertain`, as the result page shows it (core/uncertainty.py)."""
    body: dict[str, Any] = {
        "id": p.id, "status": p.status, "filename": p.filename, "source": p.source,
        "batch_id": p.batch_id, "created_at": iso(p.created_at),
        "width": p.width, "height": p.height, "size_bytes": p.size_bytes,
    }
    if p.status == Status.DONE:
        body |= {"label": p.label, "confidence": p.confidence,
                 "uncertain": uncertain(p.confidence, uncertain_below), "top_k": p.top_k,
                 "model_version": p.model_version, "model_role": p.model_role,
                 "finished_at": iso(p.finished_at),
                 "seconds": p.seconds, "serving_ms": p.serving_ms}
    elif p.status == Status.FAILED:
        body |= {"error": p.error, "finished_at": iso(p.finished_at)}
    return body


def record_json(p: Prediction, *, uncertain_below: float) -> dict[str, Any]:
    """A record as the back office's JSON shows it: the API's body and its review."""
    return prediction_json(p, uncertain_below=uncertain_below) | {
        "correct": p.correct, "true_label": p.true_label,
        "reviewed_by": p.reviewed_by, "reviewed_at": iso(p.reviewed_at)}


def get_batch(svc: Connections, batch_id: str) -> Batch | None:
    with svc.db.session() as session:
        return session.get(Batch, batch_id)


def batch_predictions(svc: Connections, batch_id: str) -> list[Prediction]:
    with svc.db.session() as session:
        return list(session.scalars(select(Prediction).where(Prediction.batch_id == batch_id)
                                    .order_by(Prediction.created_at, Prediction.filename)))


def batch_json(svc: Connections, batch: Batch) -> dict[str, Any]:
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
        "id": batch.id, "name": batch.name, "created_at": iso(batch.created_at),
        "total": batch.total, "counts": counts, "finished": finished,
        "progress": finished / batch.total if batch.total else 1.0,
        "complete": finished == batch.total,
        "labels": dict(Counter(labels).most_common()), "rejected": batch.rejected,
    }


def history(svc: Connections, visitor: str | None, limit: int = 50) -> list[Prediction]:
    if not visitor:
        return []
    with svc.db.session() as session:
        return list(session.scalars(select(Prediction).where(Prediction.visitor == visitor)
                                    .order_by(Prediction.created_at.desc()).limit(limit)))


def iso(moment) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds") + "Z"


def csv_cell(text: str) -> str:
    """A user's text for a CSV cell that a spreadsheet will not run as a formula."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
