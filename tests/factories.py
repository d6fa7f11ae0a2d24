"""Test factories: the one place tests make what they send to the system (photos
and other images, zips, records written straight to the database) and the small
tools they share (a database session, a free port, waiting for a condition).

Every maker is deterministic, the same arguments giving the same bytes, so a
test can make a file again to compare it with what the site stored. Fixtures
stay in conftest.py and web_fixtures.py; they use these too.
"""

from __future__ import annotations

import io
import random
import socket
import struct
import subprocess
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.db import Database, Prediction
    from core.storage import ImageStore

# --- photos the shapes model can classify ----------------------------------------------------

# Three classes a pretrained MobileNetV2 tells apart easily, so a few photos
# and seconds of training give a model whose answers mean something.
SHAPES = {
    "circle": ((210, 40, 40), "ellipse"),
    "square": ((40, 170, 60), "rectangle"),
    "triangle": ((50, 70, 200), "polygon"),
}
SUFFIXES = [".jpg", ".png", ".bmp", ".gif", ".webp", ".jpeg"]


def draw_photo(kind: str, seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """One shape of `kind`, placed and sized by `seed`, on a noisy light background."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(noise + 170)
    color, shape = SHAPES[kind]
    draw = ImageDraw.Draw(image)
    w, h = size
    x, y = int(rng.integers(45, w - 45)), int(rng.integers(40, h - 40))
    r = int(rng.integers(25, 38))
    if shape == "ellipse":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
    elif shape == "rectangle":
        draw.rectangle((x - r, y - r, x + r, y + r), fill=color)
    else:
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=color)
    return image


def encoded(image: Image.Image, fmt: str = "JPEG", **save) -> bytes:
    """The image as a file of format `fmt` (Pillow's name: JPEG, PNG, WEBP, MPO...)."""
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def photo_bytes(kind: str = "circle", seed: int = 0, fmt: str = "JPEG",
                size: tuple[int, int] = (160, 120), *, resize: tuple[int, int] | None = None,
                **save) -> bytes:
    """A shape photo as a file; `resize` scales the drawing (a shape needs 90x80 pixels
    to be drawn), `save` goes to Pillow (exif=..., compress_level=...)."""
    image = draw_photo(kind, seed=seed, size=size)
    return encoded(image.resize(resize) if resize else image, fmt, **save)


def oriented_jpeg(width: int, height: int, orientation: int) -> bytes:
    """A shape photo as a JPEG of width x height whose EXIF orientation tag says
    how a viewer must turn it (6: a quarter turn clockwise; 1: as it is)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return photo_bytes("square", 5, size=(width, height), exif=exif.tobytes())


def photo_file(folder: Path, kind: str, seed: int, suffix: str = ".jpg") -> Path:
    """A shape photo saved as folder/<kind>-<seed><suffix>, the suffix choosing the format."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{seed}{suffix}"
    draw_photo(kind, seed=seed).save(path)
    return path


def make_dataset(root: Path, per_class: dict[str, int] | None = None) -> Path:
    """A folder-per-class photo set in every supported format (classes that are
    not SHAPES get circles: a data set the trainer must refuse or count)."""
    per_class = per_class or dict.fromkeys(SHAPES, 14)
    for c, (kind, count) in enumerate(per_class.items()):
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            suffix = SUFFIXES[i % len(SUFFIXES)]
            draw_photo(kind if kind in SHAPES else "circle", seed=1000 * c + i).save(
                folder / f"{kind}_{i:03d}{suffix}")
    return root


# --- images whose content does not matter ----------------------------------------------------

def image_bytes(seed: int = 0, fmt: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
    """A small flat image whose bytes differ from seed to seed: a few hundred bytes,
    for tests about storage, names and limits rather than what the picture shows."""
    image = Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256))
    ImageDraw.Draw(image).rectangle((seed % 20, 5, seed % 20 + 20, 30), fill=(250, 250, 250))
    return encoded(image, fmt)


def noise_png(side: int, seed: int = 0) -> bytes:
    """A PNG of random pixels: it barely compresses, so its size is about 3 * side**2."""
    pixels = Image.frombytes("RGB", (side, side), random.Random(seed).randbytes(side * side * 3))
    return encoded(pixels, "PNG", compress_level=1)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def png(width: int, height: int, idat: bytes, color_type: int = 2) -> bytes:
    """A well-formed PNG of 8-bit pixels (RGB unless `color_type` says otherwise) with
    the given compressed pixel data, made by hand so its header can claim anything."""
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims width x height pixels of RGB, with a few
    bytes of pixel data: decoding it would mean allocating width * height * 3 bytes."""
    return png(width, height, zlib.compress(b"\x00" * 64))


# --- archives and upload fields --------------------------------------------------------------

def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A .zip of name -> content, in that order."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def part(data: bytes, name: str) -> tuple[io.BytesIO, str]:
    """A multipart file field's value for Flask's test client."""
    return io.BytesIO(data), name


# --- the database ----------------------------------------------------------------------------

@contextmanager
def database(url: str) -> Iterator[Database]:
    """The database at `url`, its connections closed at the end: a pool left open
    would hold the session's PostgreSQL database until the DROP at the end."""
    from core.db import Database

    db = Database(url)
    try:
        yield db
    finally:
        db.dispose()


@contextmanager
def session(url: str) -> Iterator[Session]:
    """One session on the database at `url`, committed at the end of the block."""
    with database(url) as db, db.session() as opened:
        yield opened


def stored_prediction(db: Database | str, prediction_id: str) -> Prediction | None:
    """The record as it is now, read through an open Database or from its URL."""
    from core.db import Prediction

    if isinstance(db, str):
        with database(db) as opened:
            return stored_prediction(opened, prediction_id)
    with db.session() as opened:
        return opened.get(Prediction, prediction_id)


def add_prediction(db: Database, store: ImageStore, seed: int = 0, *,
                   image: bytes | None = None, **fields) -> str:
    """A Prediction written straight to the database, its image (`image`, or
    image_bytes(seed)) in the store: done, "apple" at 0.9 by version 1, unless
    `fields` say otherwise (a status other than done has no label, so no score).
    Returns its id."""
    from core.db import Prediction, Status

    data = image if image is not None else image_bytes(seed)
    status = fields.get("status", Status.DONE)
    label = fields.get("label", "apple" if status == Status.DONE else None)
    confidence = fields.get("confidence", 0.9 if label else None)
    values = {
        "status": status, "label": label, "confidence": confidence,
        "top_k": [{"label": label, "score": confidence},
                  {"label": "pear", "score": round(1 - confidence, 6)}] if label else None,
        "model_version": 1 if label else None, "source": "page",
        "filename": f"photo-{seed}.jpg",
        "image_sha256": store.put(data, "jpg"), "image_format": "jpg",
        "width": 64, "height": 48, "size_bytes": len(data),
    } | fields
    with db.session() as opened:
        prediction = Prediction(**values)
        opened.add(prediction)
    return prediction.id


def add_reviewed_shapes(db: Database, store: ImageStore, truths: dict[str, int],
                        seed: int = 5000) -> list[str]:
    """Answered records of shape photos the data set does not hold, `truths[kind]`
    of each kind, reviewed with their true kind; returns their ids."""
    from core.db import utcnow

    ids = []
    for kind, count in truths.items():
        for i in range(count):
            ids.append(add_prediction(
                db, store, image=photo_bytes(kind, seed + 100 * len(ids) + i), label=kind,
                confidence=0.8, true_label=kind, correct=True, reviewed_at=utcnow(),
                reviewed_by="admin"))
    return ids


# quotas and queues (issue 13)
def add_batch(db: Database, **fields) -> str:
    """A Batch written straight to the database (of no records until some name it:
    add_prediction(..., batch_id=...)). Returns its id."""
    from core.db import Batch, new_id

    values = {"id": new_id(), "source": "api", "total": 0, "rejected": []} | fields
    with db.session() as opened:
        opened.add(Batch(**values))
    return values["id"]


def add_api_key(db: Database, name: str = "program", *, per_hour: int = 1000,
                per_day: int = 10_000) -> str:
    """A live API key made as create-api-key makes one; returns the key itself."""
    from frontend import api_keys

    with db.session() as opened:
        return api_keys.create(opened, name, images_per_hour=per_hour, images_per_day=per_day)


def add_training_run(db: Database, **fields) -> str:
    """A TrainingRun written straight to the database: queued and active unless
    `fields` say otherwise (a finished status is stored inactive). Returns its id."""
    from sqlalchemy import null

    from core.db import TrainingRun
    from core.training import ACTIVE

    status = fields.get("status", "queued")
    # The ORM inserts a None as the column's default (True); null() is SQL's NULL.
    values = {"status": status, "active": True if status in ACTIVE else null(),
              "requested_by": "someone"} | fields
    with db.session() as opened:
        run = TrainingRun(**values)
        opened.add(run)
    return run.id


def model_version_files(model: Path, version: int, *, where: str = "served",
                        metrics: dict | None = None) -> Path:
    """A version's folder as the trainer leaves it, under model/<version>/ ("served")
    or model/candidates/<version>/ ("candidate"), with a marker file (a real
    SavedModel is not needed to move or list it), and its report's metrics.json
    when `metrics` is given. Returns the version's folder."""
    import json

    folder = model / str(version) if where == "served" else model / "candidates" / str(version)
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"not read by these tests")
    if metrics is not None:
        report = model / "reports" / str(version)
        report.mkdir(parents=True, exist_ok=True)
        (report / "metrics.json").write_text(json.dumps(metrics))
    return folder


# --- ports and waiting -----------------------------------------------------------------------

def free_port() -> int:
    """A port nothing listens on now: for a process that must come back at the same address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, as a supervisor stops a process, then SIGKILL after `timeout`."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(condition: Callable[[], object], timeout: float, what: str, *,
               interval: float = 0.05, detail: Callable[[], str] | None = None) -> float:
    """Polls until `condition()` is true; returns the seconds it took. On time-out the
    failure names `what` and adds `detail()` (a log's tail, the counts so far)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(interval)
    message = f"timed out after {timeout} s waiting for {what}"
    raise AssertionError(f"{message}:\n{detail()}" if detail else message)


# --- a training run's progress, as the trainer worker would receive it ------------------------

class RecordedProgress:
    """Keeps every report `train()` makes; raises `cancel_at`'s exception when
    that phase is reported, as the worker's reporter does on a cancel request."""

    def __init__(self, cancel_at=None):
        self.phases: list[tuple[str, float]] = []
        self.versions: list[int] = []
        self.cancel_at = cancel_at

    def phase(self, phase, fraction: float) -> None:
        self.phases.append((phase, fraction))
        if phase == self.cancel_at:
            raise Cancelled(f"cancelled during {phase}")

    def reserved(self, version: int) -> None:
        self.versions.append(version)


class Cancelled(Exception):
    pass
