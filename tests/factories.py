"""Test factories: the one place tests make what they send to the system (photos
and other images, zips, records written straight to the database) and the small
tools they share (a database session, a free port, waiting for a condition).

Every maker is deterministic, the same arguments giving the same bytes, so a
test can make a file again to compare it with what the site stored. Fixtures
stay in conftest.py and web_fixtures.py; they use these too.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
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
    from tests.serving_process import ServingProcess

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


# --- animated images -----------------------------------------------------
# Made by hand from one encoded frame repeated, so 100 frames of 2000x2000 take
# milliseconds to make (Pillow's writers compare every frame with the last).

def animated_gif(frames: int, size: tuple[int, int] = (64, 48), *,
                 screen: tuple[int, int] | None = None) -> bytes:
    """A looping GIF of `frames` frames of width x height (flat grey), on a logical
    screen of that size unless `screen` says otherwise (frames may reach past it)."""
    one = bytearray(encoded(Image.new("L", size, 128), "GIF"))
    if screen:
        one[6:10] = struct.pack("<HH", *screen)
    flags = one[10]
    start = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    block = one[one.index(b",", start):-1]  # the image: descriptor, pixels; not the trailer
    loop = b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    delay = b"!\xf9\x04\x04\x0a\x00\x00\x00"  # 0.1 s a frame, each kept under the next
    return bytes(one[:start] + loop + (delay + block) * frames + b";")


def animated_png(frames: int, size: tuple[int, int] = (64, 48), *,
                 declared: int | None = None) -> bytes:
    """An APNG of `frames` whole-canvas grey frames; its acTL chunk claims `declared`
    frames (`frames` unless given): a decoder trusts that count."""
    width, height = size
    pixels = zlib.compress((b"\x00" + b"\x80" * width) * height, 9)
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)),
              _png_chunk(b"acTL", struct.pack(">II", declared or frames, 0))]
    sequence = 0
    for frame in range(frames):
        chunks.append(_png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", sequence, width, height,
                                                      0, 0, 1, 10, 0, 0)))
        sequence += 1
        if frame == 0:
            chunks.append(_png_chunk(b"IDAT", pixels))
        else:
            chunks.append(_png_chunk(b"fdAT", struct.pack(">I", sequence) + pixels))
            sequence += 1
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks) + _png_chunk(b"IEND", b"")


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) % 2)


def _u24(value: int) -> bytes:
    return struct.pack("<I", value)[:3]


def animated_webp(frames: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """An animated WebP (VP8X, ANIM, one ANMF chunk a frame) of `frames` lossless
    whole-canvas frames."""
    width, height = size
    still = encoded(Image.new("RGB", size, (128, 128, 128)), "WEBP", lossless=True)
    assert still[12:16] == b"VP8L", still[:16]
    frame = _riff_chunk(b"ANMF", _u24(0) + _u24(0) + _u24(width - 1) + _u24(height - 1)
                        + _u24(100) + b"\x00" + still[12:])
    body = (b"WEBP" + _riff_chunk(b"VP8X", b"\x02\x00\x00\x00" + _u24(width - 1)
                                  + _u24(height - 1))
            + _riff_chunk(b"ANIM", b"\x00" * 4 + struct.pack("<H", 0)) + frame * frames)
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --- archives and upload fields --------------------------------------------------------------

def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A .zip of name -> content, in that order."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def zip_of_empty_files(count: int, *, declared: int | None = None) -> bytes:
    """A .zip of `count` empty stored files (0.jpg, 1.jpg, ...) written with struct as
    APPNOTE.TXT lays it out, in a fraction of the time zipfile takes (20 µs a member);
    past 65,534 entries its end records are ZIP64's, as zipfile writes them. Its end
    records claim `declared` entries (`count` unless given): an archive that lies."""
    local, central = [], []
    offset = 0
    for i in range(count):
        name = f"{i}.jpg".encode()
        header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0x21, 0, 0, 0,
                             len(name), 0) + name
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, 0, 0,
                                   0, len(name), 0, 0, 0, 0, 0, offset) + name)
        local.append(header)
        offset += len(header)
    directory = b"".join(central)
    entries = count if declared is None else declared
    return (b"".join(local) + directory
            + _zip_end(entries, len(directory), offset, zip64=entries >= 0xFFFF))


def zip64_ended(data: bytes) -> bytes:
    """The same .zip (one without a comment) ended as zipfile ends an archive of 65,535
    entries or more: the ZIP64 end record and its locator, then an end record whose
    counts say 0xFFFF, "see the ZIP64 record"."""
    _, _, _, _, entries, size, offset, _ = struct.unpack("<4s4H2LH", data[-22:])
    return data[:-22] + _zip_end(entries, size, offset, zip64=True)


def _zip_end(entries: int, size: int, offset: int, *, zip64: bool) -> bytes:
    """APPNOTE 4.3.14-16: the end records of a central directory of `size` bytes at
    `offset`, which ends where they start."""
    listed = 0xFFFF if zip64 else entries  # 4.4.1.4: "see the ZIP64 record"
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, listed, listed, size, offset, 0)
    if not zip64:
        return end
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries,
                         size, offset)
    return record + struct.pack("<4sLQL", b"PK\x06\x07", 0, offset + size, 1) + end


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


# quotas and queues
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


# --- deletion and retention ---------------------------------------------------------

def days_ago(days: float):
    """A naive UTC time `days` ago, as the database stores created_at."""
    from datetime import timedelta

    from core.db import utcnow

    return utcnow() - timedelta(days=days)


def add_batch(db: Database, store: ImageStore, ages: list[float], *, seed: int = 700,
              **fields) -> tuple[str, list[str]]:
    """A batch whose records (done, made by add_prediction) are `ages[i]` days old,
    each its own photo; `total` counts them all, as an upload's does. Returns the
    batch's id and its records' ids."""
    from core.db import Batch, new_id

    batch_id = new_id()
    with db.session() as opened:
        opened.add(Batch(id=batch_id, source="page", total=len(ages), rejected=[],
                         created_at=days_ago(max(ages)), **fields))
    ids = [add_prediction(db, store, seed + i, batch_id=batch_id, source="batch",
                          created_at=days_ago(age), **fields) for i, age in enumerate(ages)]
    return batch_id, ids


def run_manifest(model: Path, version: int, reviewed: list[str]) -> Path:
    """A training run's manifest.json as trainer/report.py writes it, its reviewed
    photos given by sha256 (and one base photo). Returns its path."""
    import json

    folder = model / "reports" / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.json"
    path.write_text(json.dumps({
        "base": [{"path": "circle/circle-0.jpg", "sha256": "0" * 64, "label": "circle"}],
        "reviewed": [{"sha256": sha, "label": "circle"} for sha in reviewed]}, indent=2))
    return path


# --- drift and webhooks ----------------------------------------------------------------------

def add_answers(db: Database, version: int, answers: dict[tuple[str, float], int], *,
                hours_ago: float = 1.0, **fields) -> int:
    """Done records of `version` written straight to the database in one session,
    `answers[(label, confidence)]` of each, created `hours_ago`: a day of traffic
    in a moment, unless `fields` say otherwise. No image behind them (drift reads
    labels and scores only). Returns how many."""
    from datetime import timedelta

    from core.db import Prediction, utcnow

    created = utcnow() - timedelta(hours=hours_ago)
    rows = [Prediction(**{"status": "done", "label": label, "confidence": confidence,
                          "top_k": [{"label": label, "score": confidence}],
                          "model_version": version, "source": "page",
                          "filename": f"answer-{i}.jpg", "image_sha256": "0" * 64,
                          "image_format": "jpg", "width": 64, "height": 48, "size_bytes": 100,
                          "created_at": created, "finished_at": created} | fields)
            for (label, confidence), count in answers.items() for i in range(count)]
    with db.session() as opened:
        opened.add_all(rows)
    return len(rows)


class WebhookReceiver:
    """What `webhook_receiver` got: each POST's headers and raw body, in order."""

    def __init__(self, url: str):
        self.url = url
        self.received: list[dict] = []

    def events(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.received]


@contextmanager
def webhook_receiver(statuses: list[int] | None = None) -> Iterator[WebhookReceiver]:
    """A webhook receiver on a free loopback port: keeps every POST and answers the
    i-th with statuses[i] (200 once they run out), an empty body each time."""
    answers = list(statuses or [])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            receiver.received.append({"headers": dict(self.headers), "body": body,
                                      "path": self.path})
            self.send_response(answers.pop(0) if answers else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    receiver = WebhookReceiver(f"http://127.0.0.1:{server.server_address[1]}/hooks/classifier")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


# --- metrics ---------------------------------------------------------------------------------

def add_timed_answers(db: Database, version: int | None, role: str | None,
                      seconds: list[float], *, minutes_ago: float = 1.0, **fields) -> int:
    """Records `version` answered in `role`, created `minutes_ago`, the i-th one
    finished `seconds[i]` after its upload with Serving's call taking a tenth of
    that: done, "circle" at 0.9, from the page, unless `fields` say otherwise. No
    image behind them (the figures read timestamps and scores). Returns how many."""
    from datetime import timedelta

    from core.db import Prediction, utcnow

    created = utcnow() - timedelta(minutes=minutes_ago)
    rows = [Prediction(**{"status": "done", "label": "circle", "confidence": 0.9,
                          "model_version": version, "model_role": role, "source": "page",
                          "filename": f"timed-{i}.jpg", "image_sha256": "0" * 64,
                          "image_format": "jpg", "width": 64, "height": 48, "size_bytes": 100,
                          "created_at": created, "started_at": created,
                          "finished_at": created + timedelta(seconds=took),
                          "serving_ms": took * 100} | fields)
            for i, took in enumerate(seconds)]
    with db.session() as opened:
        opened.add_all(rows)
    return len(rows)


def scraped(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A Prometheus scrape as {(sample name, its labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


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


# --- administrators and their sessions ---------------------------------------------

def add_admin(db: Database, username: str, password: str) -> int:
    """An administrator written straight to the database, hashed with one PBKDF2
    round (create-admin's scrypt takes 0.3 s); returns its id."""
    from werkzeug.security import generate_password_hash

    from core.db import User

    with db.session() as adding:
        user = User(username=username,
                    password_hash=generate_password_hash(password, "pbkdf2:sha256:1"))
        adding.add(user)
        adding.flush()
        return user.id


def new_token(runner, name: str = "admin") -> str:
    """A bearer token for /admin/api/*, made by `flask create-token` (the app's CLI runner)."""
    result = runner.invoke(args=["create-token", name])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin_sessions(db: Database, username: str) -> list:
    """Every AdminSession row of the administrator, the oldest first."""
    from sqlalchemy import select

    from core.db import AdminSession, User

    with db.session() as reading:
        return list(reading.scalars(select(AdminSession).join(User)
                                    .where(User.username == username)
                                    .order_by(AdminSession.id)))


def _healthy(url: str, process: subprocess.Popen, log: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"gunicorn exited with {process.returncode}:\n"
                             f"{log.read_text(errors='replace')[-3000:]}")
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def gunicorn(tmp_path: Path) -> Iterator[str]:
    """The site under gunicorn (gunicorn.conf.py) on a free loopback port, with the
    environment's settings; its URL. Stopped with SIGTERM, gunicorn's graceful stop."""
    from core.settings import ROOT

    port = free_port()
    bind = f"127.0.0.1:{port}"
    log = tmp_path / "gunicorn.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", bind, "frontend:create_app()"],
            cwd=ROOT, env=os.environ | {"WEB_BIND": bind, "PORT": str(port)},
            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://{bind}"
    try:
        wait_until(lambda: _healthy(url, process, log), 90, f"gunicorn at {url}/healthz")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def stand_in_serving(predict: Callable[[], tuple[int, dict]]) -> Iterator[str]:
    """A stand-in for Serving on a free loopback port, its URL: the model is
    AVAILABLE at version 1, and each predict call is answered with what
    `predict()` returns (status, JSON body), after it has held the call as long
    as it likes. For the faults a real Serving does not make on cue: a predict
    that hangs past the job's timeout, or one held while the test deletes its
    records."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self._answer(200, {"model_version_status": [{"version": "1", "state": "AVAILABLE"}]})

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._answer(*predict())

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


# --- roll-outs: versions that answer differently -------------------------------------------

def constant_classifier(folder: Path, classes: list[str], answer: str) -> Path:
    """A SavedModel with the model contract (core/contract.py) that answers `answer`
    for any image, sure of it: a version deliberately worse than a trained one.
    Written under a staging name and renamed, as the trainer publishes."""
    import tensorflow as tf

    from core.contract import CLASSES, INPUT, SCORES, SIGNATURE

    scores = [1.0 if name == answer else 0.0 for name in classes]

    class Constant(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT)])
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            rows = tf.shape(images)[0]
            return {SCORES: tf.tile(tf.constant([scores]), [rows, 1]),
                    CLASSES: tf.tile(tf.constant([classes]), [rows, 1])}

    module = Constant()
    staging = folder.parent / f".staging-{folder.name}"
    tf.saved_model.save(module, str(staging), signatures={SIGNATURE: module.serve})
    os.rename(staging, folder)
    return folder


def serve_every_version(model_dir: Path, log: Path) -> ServingProcess:
    """The embedded Serving with every version of `model_dir` loaded at once
    (`model_version_policy { all {} }`), polled every half second."""
    from tests.serving_process import ServingProcess

    config = model_dir.parent / f"{model_dir.name}.config"
    config.write_text(f'model_config_list {{ config {{ name: "classifier" base_path: '
                      f'"{model_dir}" model_platform: "tensorflow" '
                      f'model_version_policy {{ all {{ }} }} }} }}')
    return ServingProcess([f"--model_config_file={config}",
                           "--file_system_poll_wait_seconds=0.5"], log).start()
