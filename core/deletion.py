"""Deleting uploads: the one rule the site (a visitor's or an administrator's
deletion) and the workers (the retention purge) share.

Records go first, in one transaction per chunk: `DELETE ... RETURNING` names
exactly the rows this statement removed, so two deleters racing for the same
record count it once. A batch's `total` drops by its records deleted, so its
page and API still add up (finished == total means complete), and a batch
whose last record went is deleted with it. Files go after the commit, and only
those no remaining record names: the image store is content-addressed, so two
uploads of the same photo share one file. A photo that left the store and that
a training run learnt from is then written into that run's manifest
(reports/<N>/manifest.json, under "deleted"), so the report says which of its
photos no longer exist, when and why.

A record still queued or running may be deleted: the worker's writes are
guarded UPDATEs that simply match no row (worker/tasks.py).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import ColumnElement, delete, exists, select, update

from core import model_files
from core.db import Batch, Prediction, utcnow
from core.lifecycle.connections import Connections

log = logging.getLogger(__name__)

#: Why a photo was deleted, as its run's manifest records it.
RETENTION = "retention"
UPLOADER = "deleted by its uploader"

#: Records deleted in one transaction: a large batch or backlog never holds a
#: long write lock (SQLite's is the whole database).
CHUNK = 500


class _Anyone:
    def __repr__(self) -> str:
        return "ANYONE"


#: Whose records a deletion may take: an administrator's and the purge's take
#: anyone's; a visitor's only those its browser sent, and none without an id.
ANYONE = _Anyone()


def by_admin(name: str) -> str:
    return f"deleted by admin {name}"


@dataclass
class Deleted:
    """What one deletion removed."""

    records: int = 0
    batches: int = 0
    images: int = 0
    thumbnails: int = 0
    #: Training runs' manifests that got a note of a deleted photo.
    manifests: int = 0

    def add(self, other: Deleted) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def delete_predictions(conns: Connections, ids: Sequence[str], *, reason: str,
                       visitor: str | None | _Anyone) -> Deleted:
    """Deletes these records of `visitor` (a browser's id, or ANYONE), then the
    files and batches nothing else needs."""
    done = Deleted()
    if visitor is None or visitor == "":
        return done
    ids = list(dict.fromkeys(ids))
    for start in range(0, len(ids), CHUNK):
        where = [Prediction.id.in_(ids[start:start + CHUNK])]
        if visitor is not ANYONE:
            where.append(Prediction.visitor == visitor)
        done.add(_delete(conns, where, reason))
    return done


def delete_batch(conns: Connections, batch_id: str, *, reason: str,
                 visitor: str | None | _Anyone) -> Deleted | None:
    """Deletes a batch of `visitor` (or ANYONE's) and all its records; None if
    there is no such batch of theirs."""
    if visitor is None or visitor == "":
        return None
    with conns.db.session() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or (visitor is not ANYONE and batch.visitor != visitor):
            return None
        ids = list(session.scalars(select(Prediction.id).where(Prediction.batch_id == batch_id)))
    done = delete_predictions(conns, ids, reason=reason, visitor=ANYONE)
    with conns.db.session() as session:  # a batch whose records all went already is gone
        done.batches += session.execute(delete(Batch).where(Batch.id == batch_id)).rowcount
    return done


def _delete(conns: Connections, where: list[ColumnElement[bool]], reason: str) -> Deleted:
    done = Deleted()
    with conns.db.session() as session:
        rows = session.execute(delete(Prediction).where(*where).returning(
            Prediction.image_sha256, Prediction.image_format, Prediction.batch_id)).all()
        done.records = len(rows)
        for batch_id, count in Counter(r.batch_id for r in rows if r.batch_id).items():
            # The row lock of this UPDATE orders concurrent deleters of one batch,
            # so the last of them sees every other record gone and deletes it.
            session.execute(update(Batch).where(Batch.id == batch_id)
                            .values(total=Batch.total - count))
            done.batches += session.execute(delete(Batch).where(
                Batch.id == batch_id,
                ~exists().where(Prediction.batch_id == batch_id))).rowcount
    if rows:
        gone = _unreferenced(conns, {(r.image_sha256, r.image_format) for r in rows})
        for sha256, extension in gone:
            image, thumbnail = conns.store.remove(sha256, extension)
            done.images += image
            done.thumbnails += thumbnail
        done.manifests = note_in_manifests(conns.settings.model_dir,
                                           {sha for sha, _ in gone}, reason=reason)
    return done


def _unreferenced(conns: Connections, files: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """The files of `files` that no record names any more."""
    with conns.db.session() as session:
        named = set(session.scalars(select(Prediction.image_sha256).distinct().where(
            Prediction.image_sha256.in_({sha for sha, _ in files}))))
    return sorted(f for f in files if f[0] not in named)


def note_in_manifests(model: Path, deleted: Iterable[str], *, reason: str,
                      when: datetime | None = None) -> int:
    """Adds each deleted photo to the manifest of every training run that learnt
    from it; returns how many manifests changed."""
    deleted = set(deleted)
    if not deleted:
        return 0
    stamp = (when or utcnow()).isoformat(timespec="seconds") + "Z"
    changed = 0
    for path in sorted((model / model_files.REPORTS).glob(f"*/{model_files.MANIFEST}")):
        try:
            changed += _note(path, deleted, reason, stamp)
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # unreadable: logged
            log.warning("cannot note deleted photos in %s: %s", path, exc)
    return changed


def _note(path: Path, deleted: set[str], reason: str, stamp: str) -> bool:
    # Under a lock on the report's folder: the site and a worker may note at once.
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        manifest = json.loads(path.read_text())
        used = {entry.get("sha256") for entry in manifest.get("reviewed", [])}
        noted = {entry.get("sha256") for entry in manifest.get("deleted", [])}
        new = sorted((deleted & used) - noted)
        if not new:
            return False
        manifest.setdefault("deleted", []).extend(
            {"sha256": sha, "deleted_at": stamp, "reason": reason} for sha in new)
        _write_atomically(path, json.dumps(manifest, indent=2) + "\n")
        return True
    finally:
        os.close(folder)  # releases the lock


def _write_atomically(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))  # mkstemp's is 0600
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
