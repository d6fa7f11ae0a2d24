"""A corpus of bad input, sent to every endpoint of the site that takes input.

Every bad input must be refused with a 4xx (never a 5xx, never a 2xx), with a
clear message (`{"error": "..."}` under /api and /admin/api, an HTML page with
the message elsewhere) and no traceback, storing nothing (no new rows, no new
files, no new jobs) and losing nothing already stored: each test first uploads
one good image through the page form (`site.seed`) and checks it afterwards.

Input that is odd but acceptable (a valid image with a wrong name, HTML or
unicode in a file name or a form field) is accepted, and then every page and
export that shows it is fetched: no markup from the input ever comes out
unescaped, and nothing is written outside the upload folder.

The limits are small (LIMITS) so that every case is crossed with a file of a
few kilobytes. Every test runs on SQLite and PostgreSQL (tests/web_fixtures.py).
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import random
import re
import struct
import time
import unicodedata
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
from markupsafe import escape
from PIL import Image
from sqlalchemy import select

from core.db import Batch, Prediction, Status
from core.settings import ROOT
from frontend.uploads import display_name
from tests.factories import (
    add_prediction,
    animated_gif,
    animated_png,
    animated_webp,
    image_bytes,
    noise_png,
    png,
    png_claiming,
    stored_prediction,
    zip_bytes,
    zip_of_empty_files,
)
from tests.web_fixtures import ADMIN_NAME, ADMIN_PASSWORD, csrf_token

LIMITS = {"MAX_IMAGE_BYTES": 60_000, "MAX_REQUEST_BYTES": 200_000,
          "MAX_IMAGE_PIXELS": 200_000, "MAX_BATCH_IMAGES": 4}
BOUNDARY = "bad-inputs-boundary-7f3a"


# --- making files ---------------------------------------------------------------------------

def png_bomb(side: int = 3000) -> bytes:
    """A real decompression bomb: side x side grey pixels, all of them there, that
    inflate to side**2 bytes from a file of a few kB."""
    return png(side, side, zlib.compress(b"\x00" * ((side + 1) * side), 9), color_type=0)


def png_with_corrupt_pixels() -> bytes:
    data = image_bytes(1, "PNG")
    start = data.index(b"IDAT") + 4
    damaged = bytearray(data)
    for i in range(start + 10, start + 60):
        damaged[i] ^= 0x5A
    return bytes(damaged)


def gif_claiming(width: int, height: int) -> bytes:
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
            + b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00;")


def bmp_claiming(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + bytes(16)


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(image_bytes(2))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _patch_zip(data: bytes, local: dict[int, bytes], central: dict[int, bytes]) -> bytes:
    """Overwrites fields of the first member's local and central headers."""
    out = bytearray(data)
    assert out[:4] == b"PK\x03\x04"
    cd = out.index(b"PK\x01\x02")
    for offset, value in local.items():
        out[offset:offset + len(value)] = value
    for offset, value in central.items():
        out[cd + offset:cd + offset + len(value)] = value
    return bytes(out)


def zip_lying_about_size() -> bytes:
    """A member whose headers say 100 bytes and whose data inflate to 1 MB."""
    small = struct.pack("<I", 100)
    return _patch_zip(zip_bytes({"liar.bmp": b"\x00" * 2**20}), {22: small}, {24: small})


def zip_encrypted() -> bytes:
    flag = struct.pack("<H", 1)
    return _patch_zip(zip_bytes({"secret.jpg": image_bytes(3)}), {6: flag}, {8: flag})


def zip_unknown_compression() -> bytes:
    method = struct.pack("<H", 98)  # PPMd: zipfile cannot inflate it
    return _patch_zip(zip_bytes({"packed.jpg": image_bytes(4)}), {8: method}, {10: method})


def zip_of_folders_and_hidden_files() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(zipfile.ZipInfo("photos/"), b"")
        archive.writestr(".hidden.jpg", image_bytes(5))
        archive.writestr("__MACOSX/._photo.jpg", b"\x00\x05\x16\x07")
    return out.getvalue()


def zip_claiming_directory_size(size: int) -> bytes:
    """A .zip whose end record says its central directory is `size` bytes: more than
    lies before the record."""
    data = bytearray(zip_bytes({"a.jpg": image_bytes(8)}))
    data[-10:-6] = struct.pack("<I", size)  # the end record's directory size
    return bytes(data)


def tiff_bytes() -> bytes:
    return image_bytes(6, "TIFF")


def ico_bytes() -> bytes:
    return image_bytes(7, "ICO", size=(32, 32))


# --- multipart bodies, byte for byte --------------------------------------------------------

def _quoted(filename: str) -> bytes:
    """A file name as a multipart header's quoted string (werkzeug unquotes \\ and \")."""
    return filename.replace("\\", "\\\\").replace('"', '\\"').encode()


def multipart(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    """A multipart/form-data body: (field, file name or None for a plain field, content)."""
    body = b""
    for field, filename, data in parts:
        body += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"'.encode()
        if filename is not None:
            body += b'; filename="' + _quoted(filename) + b'"\r\n'
            body += b"Content-Type: application/octet-stream"
        body += b"\r\n\r\n" + data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def post_multipart(client, path: str, parts: list[tuple[str, str | None, bytes]], **kwargs):
    return client.post(path, data=multipart(parts),
                       content_type=f"multipart/form-data; boundary={BOUNDARY}", **kwargs)


#: Where an upload of files can come in: the API one by one, the API as a batch of
#: loose files or of a .zip, the page form with one file (its result page) or a .zip.
UPLOAD_ROUTES = ["api-single", "api-batch", "api-zip", "page-single", "page-zip"]


def upload(client, route: str, files: list[tuple[str, bytes]], archive_name: str = "bad.zip",
           token: str | None = None):
    if route == "api-single":
        [(name, data)] = files
        return post_multipart(client, "/api/predictions", [("image", name, data)])
    if route == "api-batch":
        return post_multipart(client, "/api/batches", [("images", n, d) for n, d in files])
    if route == "api-zip":
        return post_multipart(client, "/api/batches",
                              [("archive", archive_name, zip_bytes(dict(files)))])
    token = token or csrf_token(client, "/")
    if route in ("page-single", "page-batch"):
        parts = [("images", n, d) for n, d in files] + [("archive", "", b"")]
    elif route == "page-zip":
        parts = [("images", "", b""), ("archive", archive_name, zip_bytes(dict(files)))]
    else:
        raise ValueError(route)
    return post_multipart(client, "/upload", [("csrf_token", None, token.encode()), *parts])


# --- looking at what is stored --------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    predictions: frozenset
    batches: frozenset
    files: tuple
    jobs: frozenset


@dataclass
class Seed:
    id: str
    filename: str
    data: bytes
    row: tuple


class Site:
    def __init__(self, app, client, env: dict[str, str], root: Path):
        self.app, self.client, self.env, self.root = app, client, env, root
        self.services = app.extensions["classifier"]
        self.upload_dir = Path(env["UPLOAD_DIR"])
        self.seed: Seed | None = None

    # what is there
    def rows(self) -> dict[str, tuple]:
        p = Prediction
        with self.services.db.session() as session:
            return {r[0]: tuple(r) for r in session.execute(select(
                p.id, p.batch_id, p.status, p.filename, p.image_sha256, p.image_format,
                p.attempts, p.error, p.label, p.correct, p.true_label, p.job_id))}

    def batches(self) -> dict[str, tuple]:
        with self.services.db.session() as session:
            return {r[0]: tuple(r) for r in session.execute(
                select(Batch.id, Batch.name, Batch.total, Batch.rejected))}

    def prediction(self, prediction_id: str) -> Prediction:
        return stored_prediction(self.services.db, prediction_id)

    def files(self) -> dict[str, str]:
        """Every file under the test's folder (the upload folder is one of its children)."""
        return {str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.root.rglob("*")) if p.is_file()}

    def snapshot(self) -> Snapshot:
        batches = {k: (v[0], v[1], v[2], repr(v[3])) for k, v in self.batches().items()}
        return Snapshot(frozenset(self.rows().values()), frozenset(batches.values()),
                        tuple(sorted(self.files().items())),
                        frozenset(job for queue in self.services.queues
                                  for job in queue.job_ids))

    # the one good upload made first
    def make_seed(self) -> Seed:
        data = image_bytes(99)
        response = upload(self.client, "page-single", [("seed.jpg", data)])
        assert response.status_code == 303, response.get_data(as_text=True)[:500]
        prediction_id = response.headers["Location"].rsplit("/", 1)[1]
        self.seed = Seed(prediction_id, "seed.jpg", data, self.rows()[prediction_id])
        return self.seed

    def check_seed(self) -> None:
        seed = self.seed
        assert self.rows().get(seed.id) == seed.row, "the good upload made first was changed"
        served = self.app.test_client().get(f"/images/{seed.id}")
        assert served.status_code == 200, "the good upload made first is gone"
        assert served.data == seed.data
        assert self.app.test_client().get(f"/api/predictions/{seed.id}").json["filename"] \
            == seed.filename

    # records made straight in the database, for the back office's forms
    def add_record(self, seed: int, **fields) -> str:
        return add_prediction(self.services.db, self.services.store, seed,
                              filename=f"record-{seed}.jpg", **fields)

    def admin(self):
        """A second client, logged into the back office."""
        client = self.app.test_client()
        token = csrf_token(client, "/admin/login")
        response = client.post("/admin/login", data={
            "username": ADMIN_NAME, "password": ADMIN_PASSWORD, "csrf_token": token})
        assert response.status_code == 303, response.get_data(as_text=True)[:500]
        return client


@pytest.fixture
def site(request, env, monkeypatch, tmp_path) -> Site:
    for key, value in LIMITS.items():
        monkeypatch.setenv(key, str(value))
    app = request.getfixturevalue("app")
    settings = app.extensions["classifier"].settings
    assert (settings.max_image_file_bytes, settings.max_request_bytes, settings.max_image_pixels,
            settings.max_batch_images) == tuple(LIMITS.values()), "the app was made first"
    assert app.config["MAX_CONTENT_LENGTH"] == LIMITS["MAX_REQUEST_BYTES"]
    site = Site(app, request.getfixturevalue("client"), env, tmp_path)
    site.make_seed()
    return site


@pytest.fixture
def admin(site, admin_user):
    return site.admin()


def database(request) -> str:
    return request.node.callspec.params["database_url"]


# --- what an answer must look like ----------------------------------------------------------

LEAKS = ["Traceback (most recent call last)", 'File "/', "sqlalchemy.", "psycopg.",
         "werkzeug.exceptions", "jinja2.", "Internal Server Error"]
ALERT = re.compile(r'role="alert"[^>]*>(.*?)</p>', re.S)

def is_json_route(path: str) -> bool:
    return path.startswith(("/api/", "/admin/api/"))


def message_of(response, path: str) -> str:
    """The error message an answer carries, checking its shape on the way."""
    body = response.get_data(as_text=True)
    for leak in LEAKS:
        assert leak not in body, f"{leak!r} in the answer: {body[:1000]}"
    if is_json_route(path):
        assert response.is_json, body[:500]
        assert list(response.json) == ["error"], response.json
        message = response.json["error"]
        assert isinstance(message, str)
    else:
        assert response.mimetype == "text/html", response.mimetype
        assert_no_markup_injected(body)
        message = html.unescape(" ".join(ALERT.findall(body)))
    assert message.strip(), f"no message in the answer: {body[:1000]}"
    return message


def assert_refused(site: Site, response, before: Snapshot, path: str,
                   statuses: tuple[int, ...] = (), words: tuple[str, ...] = ()) -> str:
    """A 4xx with a clear message; nothing stored; the good upload still there."""
    status = response.status_code
    assert 400 <= status < 500, f"{status}: {response.get_data(as_text=True)[:1000]}"
    if statuses:
        assert status in statuses, f"{status}, not {statuses}: {response.get_data()[:500]!r}"
    message = message_of(response, path)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert_unchanged(site, before)
    return message


def assert_unchanged(site: Site, before: Snapshot) -> None:
    after = site.snapshot()
    assert after.predictions == before.predictions, "records were added or changed"
    assert after.batches == before.batches, "batches were added or changed"
    assert after.files == before.files, "files were written or removed"
    assert after.jobs == before.jobs, "jobs were queued"
    site.check_seed()


class MarkupCheck(HTMLParser):
    """Collects what would run in a browser: event handler attributes, inline
    scripts, javascript: URLs, and images from anywhere but this site."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}={value!r}>")
            url = (value or "").strip().lower() if name in ("href", "src", "action") else ""
            # (the site's own <link rel="icon" href="data:,"> asks for no favicon)
            if url.startswith(("javascript:", "vbscript:")) or (
                    url.startswith("data:") and tag != "link"):
                self.found.append(f"<{tag} {name}={value!r}>")
        if tag == "script" and not values.get("src", "").startswith("/static/"):
            self.found.append(f"<script {values}>")
        if tag in ("img", "iframe", "object", "embed") and not (
                values.get("src") or "").startswith("/"):
            self.found.append(f"<{tag} src={values.get('src')!r}>")
        if tag in ("iframe", "object", "embed", "base"):
            self.found.append(f"<{tag}>")


def assert_no_markup_injected(body: str) -> None:
    parser = MarkupCheck()
    parser.feed(body)
    parser.close()
    assert not parser.found, f"markup from the input runs in the page: {parser.found}"


# --- 1. files that are not acceptable images, on every upload route -------------------------

@dataclass(frozen=True)
class BadFile:
    id: str
    name: str
    make: Callable[[], bytes]
    statuses: tuple[int, ...]
    words: tuple[str, ...] = ()


def _half(make: Callable[[], bytes]) -> Callable[[], bytes]:
    return lambda: (data := make())[:len(data) // 2]


BAD_FILES = [
    BadFile("empty-file", "empty.jpg", lambda: b"", (400,), ("empty",)),
    BadFile("one-byte", "one.jpg", lambda: b"\xff", (415,), ("not an image",)),
    BadFile("truncated-jpeg", "half.jpg", _half(image_bytes), (400,), ("damaged",)),
    BadFile("truncated-png", "half.png", _half(lambda: image_bytes(fmt="PNG")), (400,),
            ("damaged",)),
    BadFile("truncated-gif", "half.gif", _half(lambda: image_bytes(fmt="GIF")), (400,),
            ("damaged",)),
    BadFile("jpeg-headers-without-pixels", "head.jpg", lambda: image_bytes()[:200], (400,),
            ("damaged",)),
    BadFile("png-with-corrupt-pixel-data", "corrupt.png", png_with_corrupt_pixels, (400,),
            ("damaged",)),
    BadFile("jpeg-magic-then-garbage", "garbage.jpg",
            lambda: b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, (400, 415)),
    BadFile("png-magic-then-garbage", "garbage.png",
            lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, (400, 415)),
    BadFile("png-claiming-0x0", "nothing.png", lambda: png(0, 0, zlib.compress(b"")),
            (400, 415)),
    BadFile("random-bytes-named-jpg", "random.jpg",
            lambda: random.Random(1).randbytes(4096), (415,), ("not an image",)),
    BadFile("text-named-jpg", "notes.jpg", lambda: b"Dear diary,\n" * 40, (415,),
            ("not an image",)),
    BadFile("html-named-jpg", "page.jpg",
            lambda: b"<!doctype html><html><body><script>alert(1)</script></body></html>",
            (415,), ("not an image",)),
    BadFile("svg-named-jpg", "drawing.jpg",
            lambda: b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
                    b"<script>alert(1)</script></svg>", (415,), ("not an image",)),
    BadFile("svg-named-svg", "drawing.svg",
            lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>', (415,),
            ("not an image",)),
    BadFile("pdf-named-jpg", "document.jpg",
            lambda: b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n", (415,),
            ("not an image",)),
    BadFile("elf-executable-named-jpg", "program.jpg",
            lambda: b"\x7fELF\x02\x01\x01\x00" + bytes(56) + b"\x90" * 200, (415,),
            ("not an image",)),
    BadFile("zip-named-jpg", "archive.jpg", lambda: zip_bytes({"a.jpg": image_bytes()}),
            (415,), ("not an image",)),
    BadFile("tiff-image-unsupported", "scan.jpg", tiff_bytes, (415,)),
    BadFile("ico-image-unsupported", "favicon.ico", ico_bytes, (415,)),
    BadFile("over-the-byte-limit", "big.png", lambda: noise_png(150), (413,), ("limit",)),
    BadFile("over-the-pixel-limit", "wide.jpg", lambda: image_bytes(size=(600, 400)), (413,),
            ("600x400",)),
    BadFile("png-header-claiming-100000x100000", "huge.png",
            lambda: png_claiming(100_000, 100_000), (413,), ("pixels",)),
    BadFile("png-decompression-bomb-3000x3000", "bomb.png", png_bomb, (413,), ("pixels",)),
    BadFile("gif-header-claiming-65535x65535", "huge.gif", lambda: gif_claiming(65535, 65535),
            (413,), ("pixels",)),
    BadFile("bmp-header-claiming-40000x40000", "huge.bmp", lambda: bmp_claiming(40000, 40000),
            (413,), ("pixels",)),
    BadFile("jpeg-header-claiming-60000x60000", "huge.jpg",
            lambda: jpeg_claiming(60000, 60000), (413,), ("pixels",)),
    BadFile("gif-animation-over-the-pixel-limit-in-all-its-frames", "anim.gif",
            lambda: animated_gif(10, (200, 150)), (413,), ("10 frames of 200x150",)),
    BadFile("gif-frames-reaching-past-a-1x1-screen", "screen.gif",
            lambda: animated_gif(10, (200, 150), screen=(1, 1)), (413,),
            ("10 frames of 200x150",)),
    BadFile("apng-over-the-pixel-limit-in-all-its-frames", "anim.png",
            lambda: animated_png(10, (200, 150)), (413,), ("10 frames of 200x150",)),
    BadFile("apng-claiming-a-billion-frames", "claims.png",
            lambda: animated_png(2, declared=10**9), (413,), ("1,000,000,000 frames",)),
    BadFile("animated-webp", "anim.webp", lambda: animated_webp(3), (415,),
            ("animated WebP",)),
]


def test_the_corpus_is_what_it_says():
    """The hand-made files are what their ids claim, so a refusal is for that reason."""
    bomb = png_bomb()
    assert len(bomb) < 20_000
    assert len(noise_png(150)) > LIMITS["MAX_IMAGE_BYTES"]
    assert len(zip_bytes({"a.bmp": b"\0" * 2**20})) < 5_000
    with zipfile.ZipFile(io.BytesIO(zip_lying_about_size())) as archive:
        assert archive.infolist()[0].file_size == 100
    with zipfile.ZipFile(io.BytesIO(zip_encrypted())) as archive, \
            pytest.raises(RuntimeError, match="encrypted"):
        archive.read("secret.jpg")
    with zipfile.ZipFile(io.BytesIO(zip_unknown_compression())) as archive, \
            pytest.raises(NotImplementedError):
        archive.read("packed.jpg")
    guard = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        for data, size in [(png_claiming(100_000, 100_000), (100_000, 100_000)),
                           (bomb, (3000, 3000)), (gif_claiming(65535, 65535), (65535, 65535)),
                           (bmp_claiming(40000, 40000), (40000, 40000)),
                           (jpeg_claiming(60000, 60000), (60000, 60000))]:
            with Image.open(io.BytesIO(data)) as image:
                assert image.size == size
        with Image.open(io.BytesIO(bomb)) as image:
            image.load()  # all its pixels are there: a real bomb, not a short file
        for data, frames, size in [(animated_gif(10, (200, 150)), 10, (200, 150)),
                                   (animated_gif(10, (200, 150), screen=(1, 1)), 10, (200, 150)),
                                   (animated_png(10, (200, 150)), 10, (200, 150)),
                                   (animated_png(2, declared=10**9), 10**9, (64, 48)),
                                   (animated_webp(3), 3, (64, 48))]:
            with Image.open(io.BytesIO(data)) as image:
                assert (image.n_frames, image.size) == (frames, size)
            assert size[0] * size[1] <= LIMITS["MAX_IMAGE_PIXELS"]  # each frame is within it
    finally:
        Image.MAX_IMAGE_PIXELS = guard
    for data, listed, parsed in [(zip_of_empty_files(13), 13, 13),
                                 (zip_of_empty_files(13, declared=1), 1, 13),
                                 (zip_of_empty_files(2, declared=200_000), 0xFFFF, 2)]:
        assert struct.unpack("<H", data[-12:-10]) == (listed,)  # the end record's count
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert len(archive.infolist()) == parsed
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(zip_claiming_directory_size(2**31)))


@pytest.mark.parametrize("route", UPLOAD_ROUTES)
@pytest.mark.parametrize("bad", BAD_FILES, ids=[b.id for b in BAD_FILES])
def test_a_bad_file_is_refused(site, route, bad):
    token = csrf_token(site.client, "/") if route.startswith("page") else None
    data = bad.make()
    before = site.snapshot()
    started = time.monotonic()
    response = upload(site.client, route, [(bad.name, data)], token=token)
    elapsed = time.monotonic() - started
    path = "/api/x" if route.startswith("api") else "/upload"
    message = assert_refused(site, response, before, path, bad.statuses, bad.words)
    assert bad.name in message, f"the message does not say which file: {message!r}"
    if route.startswith("page"):
        assert 'id="upload-error"' in response.get_data(as_text=True), "not the upload form"
    assert elapsed < 2, f"{elapsed:.1f} s: was the file decoded in full?"


# --- 2. valid images with a misleading name or type: the content decides --------------------

@pytest.mark.parametrize("data, name, content_type, stored", [
    (image_bytes(10, "PNG"), "photo.jpg", "image/jpeg", "png"),
    (image_bytes(11), "setup.exe", "application/x-msdownload", "jpg"),
    (image_bytes(12, "GIF"), "report.pdf", "application/pdf", "gif"),
    (image_bytes(13, "WEBP"), "no-extension", "text/html", "webp"),
    (image_bytes(14, "BMP"), "picture.svg", "image/svg+xml", "bmp"),
    (animated_gif(3), "anim.jpg", "image/jpeg", "gif"),
    (animated_png(3), "anim.gif", "image/gif", "png"),
], ids=["png-named-jpg", "jpeg-named-exe", "gif-named-pdf", "webp-sent-as-text-html",
        "bmp-named-svg", "gif-animation-within-the-limit-named-jpg",
        "apng-within-the-limit-named-gif"])
def test_a_valid_image_with_a_wrong_name_or_type_is_accepted_by_its_content(
        site, data, name, content_type, stored):
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{name}"'
            f"\r\nContent-Type: {content_type}\r\n\r\n").encode() + data \
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    response = site.client.post("/api/predictions", data=body,
                                content_type=f"multipart/form-data; boundary={BOUNDARY}")
    assert response.status_code == 202, response.get_data(as_text=True)
    p = site.prediction(response.json["id"])
    assert (p.filename, p.image_format) == (name, stored)
    served = site.client.get(f"/images/{p.id}")
    assert served.status_code == 200
    assert served.mimetype == f"image/{'jpeg' if stored == 'jpg' else stored}"
    assert served.data == data
    sha = hashlib.sha256(data).hexdigest()
    assert (site.upload_dir / sha[:2] / f"{sha}.{stored}").is_file()
    site.check_seed()


# --- 3. archives ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BadArchive:
    id: str
    make: Callable[[], bytes]
    statuses: tuple[int, ...]
    words: tuple[str, ...] = ()


BAD_ARCHIVES = [
    BadArchive("empty-file", lambda: b"", (400,), ("not a valid .zip",)),
    BadArchive("garbage-after-the-zip-magic", lambda: b"PK\x03\x04" + b"garbage " * 100,
               (400,), ("not a valid .zip",)),
    BadArchive("truncated-zip", _half(lambda: zip_bytes({"a.jpg": image_bytes(),
                                                          "b.jpg": image_bytes(1)})),
               (400,)),
    BadArchive("a-jpeg-sent-as-the-archive", image_bytes, (400,), ("not a valid .zip",)),
    BadArchive("zip-with-no-members", lambda: zip_bytes({}), (400,)),
    BadArchive("zip-with-only-folders-and-hidden-files", zip_of_folders_and_hidden_files,
               (400,)),
    BadArchive("zip-with-no-images", lambda: zip_bytes({"readme.txt": b"hello",
                                                        "data.csv": b"a,b\n1,2\n"}),
               (415,), ("readme.txt", "not an image")),
    BadArchive("nested-zip", lambda: zip_bytes({"inner.zip": zip_bytes(
        {f"{i}.jpg": image_bytes(i) for i in range(3)})}), (415,), ("inner.zip",)),
    BadArchive("member-inflating-past-the-image-limit",
               lambda: zip_bytes({"bomb.bmp": b"\x00" * 2**20}), (413,),
               ("bomb.bmp", "limit")),
    BadArchive("members-inflating-past-the-request-limit",
               lambda: zip_bytes({f"{i}.bmp": b"\x00" * 55_000 for i in range(4)}), (413,),
               ("inflates",)),
    BadArchive("member-lying-about-its-size", zip_lying_about_size, (400,), ("liar.bmp",)),
    BadArchive("encrypted-member", zip_encrypted, (400,), ("secret.jpg",)),
    BadArchive("member-in-an-unknown-compression", zip_unknown_compression, (400,),
               ("packed.jpg",)),
    BadArchive("more-members-than-a-batch-holds",
               lambda: zip_bytes({f"{i}.jpg": image_bytes(i) for i in range(5)}), (413,),
               ("5 files",)),
    BadArchive("end-record-listing-more-entries-than-a-batch-could-hold",
               lambda: zip_of_empty_files(13), (413,), ("lists 13 entries",)),
    BadArchive("end-record-understating-its-entries",
               lambda: zip_of_empty_files(13, declared=1), (413,), ("lists 13 entries",)),
    BadArchive("zip64-record-claiming-200000-entries",
               lambda: zip_of_empty_files(2, declared=200_000), (413,),
               ("lists 200,000 entries",)),
    BadArchive("central-directory-larger-than-the-archive",
               lambda: zip_claiming_directory_size(2**31), (400,), ("not a valid .zip",)),
]


@pytest.mark.parametrize("route", ["api", "page"])
@pytest.mark.parametrize("bad", BAD_ARCHIVES, ids=[b.id for b in BAD_ARCHIVES])
def test_a_bad_archive_is_refused(site, route, bad):
    before = site.snapshot()
    part = ("archive", "photos.zip", bad.make())
    if route == "api":
        response = post_multipart(site.client, "/api/batches", [part])
    else:
        token = csrf_token(site.client, "/")
        response = post_multipart(site.client, "/upload", [
            ("csrf_token", None, token.encode()), ("images", "", b""), part])
    assert_refused(site, response, before, "/api/batches" if route == "api" else "/upload",
                   bad.statuses, bad.words)


@pytest.mark.parametrize("route", ["api-zip", "page-zip"])
def test_a_zip_bomb_member_beside_a_good_image_is_rejected_alone(site, route):
    before = site.snapshot()
    response = upload(site.client, route, [("bomb.bmp", b"\x00" * 2**20),
                                           ("good.jpg", image_bytes(20))])
    assert response.status_code in (202, 303), response.get_data(as_text=True)[:500]
    [batch_id] = set(site.batches()) - {b[0] for b in before.batches}
    summary = site.client.get(f"/api/batches/{batch_id}").json
    assert summary["total"] == 1
    [rejected] = summary["rejected"]
    assert rejected["name"] == "bomb.bmp" and "limit" in rejected["error"]
    new = [r for i, r in site.rows().items() if r not in before.predictions]
    assert [r[3] for r in new] == ["good.jpg"]
    assert len(site.files()) == len(before.files) + 1
    site.check_seed()


# --- 4. too many files, missing fields, wrong encodings -------------------------------------

def _images(n: int) -> list[tuple[str, str, bytes]]:
    return [("images", f"{i}.jpg", image_bytes(30 + i)) for i in range(n)]


def _unparsed_field_name() -> bytes:
    """A part whose name ends in a backslash, which escapes its closing quote: werkzeug
    cannot read the name and files the field under None (found by tests/test_fuzz_api.py)."""
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="field\\"\r\n\r\n'
            f"value\r\n--{BOUNDARY}--\r\n").encode()


REQUESTS = {
    # (path, body parts or raw body, content type, expected status, words)
    "api-single-field-name-unparseable": (
        "/api/predictions", _unparsed_field_name(), None, 400, ("name cannot be read",)),
    "api-batch-field-name-unparseable": (
        "/api/batches", _unparsed_field_name(), None, 400, ("name cannot be read",)),
    "page-field-name-unparseable": (
        "/upload", _unparsed_field_name(), None, 400, ("name cannot be read",)),
    "api-single-without-any-field": ("/api/predictions", [], None, 400, ("'image'",)),
    "api-single-file-under-another-name": (
        "/api/predictions", [("file", "a.jpg", image_bytes())], None, 400, ("'image'",)),
    "api-single-image-as-a-text-field": (
        "/api/predictions", [("image", None, b"a.jpg")], None, 400, ("'image'",)),
    "api-single-nameless-empty-part": (
        "/api/predictions", [("image", "", b"")], None, 400, ("empty",)),
    "api-single-raw-jpeg-body": ("/api/predictions", image_bytes(), "image/jpeg", 400, ()),
    "api-single-json-body": (
        "/api/predictions", b'{"image": "/9j/4AAQSkZJRg=="}', "application/json", 400, ()),
    "api-single-urlencoded-body": (
        "/api/predictions", b"image=%FF%D8%FF", "application/x-www-form-urlencoded", 400, ()),
    "api-single-text-body": ("/api/predictions", b"an image", "text/plain", 400, ()),
    "api-single-multipart-without-boundary": (
        "/api/predictions", b"--x\r\n\r\n", "multipart/form-data", 400, ()),
    "api-single-multipart-garbage": (
        "/api/predictions", b"\x00\x01 not multipart at all", None, 400, ()),
    "api-batch-without-any-field": ("/api/batches", [], None, 400, ("'images'",)),
    "api-batch-images-as-text-fields": (
        "/api/batches", [("images", None, b"a.jpg"), ("archive", None, b"x.zip")], None, 400,
        ("'images'",)),
    "api-batch-json-body": (
        "/api/batches", b'{"images": ["/9j/4AAQ"]}', "application/json", 400, ()),
    "api-batch-multipart-garbage": (
        "/api/batches", b"\x00\x01 not multipart at all", None, 400, ()),
    "api-batch-more-images-than-a-batch-holds": (
        "/api/batches", _images(5), None, 413, ("5 files",)),
    "api-batch-loose-images-and-a-zip-past-the-batch-limit": (
        "/api/batches", [*_images(3), ("archive", "two.zip", zip_bytes(
            {"x.jpg": image_bytes(40), "y.jpg": image_bytes(41)}))], None, 413, ("5 files",)),
    "page-without-any-file": ("/upload", [("images", "", b""), ("archive", "", b"")], None,
                              400, ("choose",)),
    "page-images-as-text-fields": (
        "/upload", [("images", None, b"a.jpg"), ("archive", None, b"b.zip")], None, 400,
        ("choose",)),
    "page-json-body": ("/upload", b'{"images": []}', "application/json", 400, ()),
    "page-more-images-than-a-batch-holds": ("/upload", _images(5), None, 413, ("5 files",)),
    "page-loose-images-and-a-zip-past-the-batch-limit": (
        "/upload", [*_images(3), ("archive", "two.zip", zip_bytes(
            {"x.jpg": image_bytes(40), "y.jpg": image_bytes(41)}))], None, 413, ("5 files",)),
    # MAX_FORM_PARTS: the batch limit and 100 more (104 here).
    "api-batch-more-parts-than-a-form-takes": (
        "/api/batches", [*_images(1), *[("note", None, b"x")] * 104], None, 413,
        ("more than 104 parts",)),
    "page-more-parts-than-a-form-takes": (
        "/upload", [*_images(1), *[("note", None, b"x")] * 104], None, 413,
        ("more than 104 parts",)),
}


@pytest.mark.parametrize("case", list(REQUESTS))
def test_a_malformed_request_is_refused(site, case):
    path, body, content_type, status, words = REQUESTS[case]
    before = site.snapshot()
    headers = {}
    if path == "/upload":
        token = csrf_token(site.client, "/")
        headers["X-CSRFToken"] = token  # so the form's own check is what answers
        if isinstance(body, list):
            body = [("csrf_token", None, token.encode()), *body]
    if isinstance(body, list):
        response = post_multipart(site.client, path, body, headers=headers)
    else:
        response = site.client.post(path, data=body, headers=headers,
                                    content_type=content_type
                                    or f"multipart/form-data; boundary={BOUNDARY}")
    assert_refused(site, response, before, path, (status,), words)


# --- 5. bodies over MAX_REQUEST_BYTES, on every form --------------------------------------

OVERSIZE = LIMITS["MAX_REQUEST_BYTES"] + 1


@pytest.mark.parametrize("target", [
    "/api/predictions", "/api/batches", "/upload", "/admin/login", "/admin/logout",
    "/admin/records/{id}/review", "/admin/records/{id}/retry", "/admin/records/retry-failed",
])
@pytest.mark.parametrize("encoding", ["multipart", "urlencoded"])
def test_a_body_over_the_request_limit_is_refused_with_413(site, admin, target, encoding):
    failed = site.add_record(50, status=Status.FAILED, label=None, confidence=None, top_k=None,
                             model_version=None, error="Serving was down")
    path = target.format(id=failed)
    client = site.client if path.startswith(("/api", "/upload", "/admin/login")) else admin
    token = csrf_token(client, "/admin/" if client is admin else
                       "/admin/login" if path == "/admin/login" else "/")
    before = site.snapshot()
    filler = b"A" * OVERSIZE
    if encoding == "multipart":
        parts = [("csrf_token", None, token.encode()), ("username", None, b"admin"),
                 ("password", None, filler), ("verdict", None, b"right"),
                 ("image", "big.jpg", b"\xff\xd8\xff" + filler), ("images", "big.jpg", filler)]
        response = post_multipart(client, path, parts)
    else:
        response = client.post(path, data=b"csrf_token=" + quote(token).encode()
                               + b"&username=admin&verdict=right&password=" + filler,
                               content_type="application/x-www-form-urlencoded")
    assert_refused(site, response, before, path, (413,), ("limit",))
    assert site.prediction(failed).status == Status.FAILED


# --- 6. path traversal in names: nothing written outside the upload folder ------------------

TRAVERSALS = ["../../evil.jpg", "/etc/x.jpg", "..\\..\\evil.jpg", "C:\\x.jpg",
              "//server/share/x.jpg", "\\\\server\\share\\x.jpg", "a/../../../b.jpg",
              "./././c.jpg", "photos/../../../../../../tmp/d.jpg"]
#: Where a naive extractor would write those.
ESCAPES = [Path("/etc/x.jpg"), Path("/evil.jpg"), Path("/tmp/d.jpg"), Path("/b.jpg"),
           ROOT / "evil.jpg", ROOT.parent / "evil.jpg", ROOT / "b.jpg", Path("/x.jpg")]


def assert_harmless_name(name: str) -> None:
    """A display name never absolute (POSIX, Windows drive or UNC) and never climbing."""
    assert name and len(name) <= 255, name
    assert not name.startswith(("/", "\\")), f"absolute: {name!r}"
    assert "\\" not in name, f"backslash: {name!r}"
    assert ".." not in name.split("/"), f"climbs: {name!r}"
    assert not re.match(r"[A-Za-z]:", name), f"a Windows drive: {name!r}"


@pytest.mark.parametrize("route", ["api-single", "api-zip", "page-zip"])
@pytest.mark.parametrize("name", TRAVERSALS)
def test_a_climbing_or_absolute_name_is_stored_by_hash_and_shown_harmless(site, route, name):
    """Sent alone, the file is accepted under a harmless name. In a .zip (beside a good
    image), a member whose path holds '..' may also be skipped, as archives' hidden
    files are; either way only files named by their hash are written, in the upload folder."""
    existed = {p for p in ESCAPES if p.exists()}
    before = site.snapshot()
    data, good = image_bytes(60), image_bytes(61)
    files = [(name, data)] if route == "api-single" else [(name, data), ("good.jpg", good)]
    if route.endswith("zip"):
        assert zipfile.ZipFile(io.BytesIO(zip_bytes(dict(files)))).namelist() == [
            name, "good.jpg"]
    response = upload(site.client, route, files)
    assert response.status_code in (202, 303), response.get_data(as_text=True)[:500]
    new = [r for r in site.rows().values() if r not in before.predictions]
    for row in new:
        assert_harmless_name(row[3])
        assert site.client.get(f"/api/predictions/{row[0]}").json["filename"] == row[3]
    names = sorted(r[3] for r in new)
    skipped = ".." in re.split(r"[/\\]", name)
    if route == "api-single" or not skipped:
        assert len(new) == len(files), f"the file was not stored: {names}"
    else:
        assert names in (["good.jpg"], sorted(["good.jpg", new[0][3]])), names
    new_files = set(site.files()) - {f for f, _ in before.files}
    assert new_files == {str(site.upload_dir.relative_to(site.root) / r[4][:2]
                             / f"{r[4]}.{r[5]}") for r in new}
    assert all(hashlib.sha256((site.root / f).read_bytes()).hexdigest() in f
               for f in new_files), "a stored file is not named by its hash"
    assert {p for p in ESCAPES if p.exists()} == existed, "a file was written outside"
    site.check_seed()


# --- 7. HTML, unicode and control characters in accepted names ------------------------------

NAMES = {
    "script-tag": "<script>alert(1)</script>.jpg",
    "img-onerror-breaking-out-of-an-attribute": '"><img src=x onerror=alert(1)>.png',
    "single-quote-attribute-breakout": "' onmouseover='alert(1)' x='.jpg",
    "template-syntax": "{{7*7}}{% if 1 %}x{% endif %}.jpg",
    "html-entities": "&lt;b&gt;bold&amp;.jpg",
    "javascript-url": "javascript:alert(1).jpg",
    "spreadsheet-formula": '=HYPERLINK("http://evil.example","x").jpg',
    "emoji-and-scripts": "фото 写真 🍎🍌.jpg",
    "right-to-left-override": "photo\u202egpj.exe",
    "nul-byte": "a\x00b.jpg",
    "terminal-escape-and-bell": "\x1b[31mred\x07.jpg",
    "very-long": "x" * 1000 + ".jpg",
    "very-long-multibyte": "é" * 300 + "🍎.jpg",
}
#: What must never come out raw in an HTML page, whatever the name.
RAW = ["<script>alert(1)", "<img src=x", "onmouseover='alert", "\" onerror", "<b>bold"]


def check_html_page(response, shown: str | None = None) -> str:
    assert response.status_code == 200, response.status_code
    assert response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    for leak in LEAKS:
        assert leak not in body
    assert_no_markup_injected(body)
    for raw in RAW:
        assert raw not in body, f"{raw!r} unescaped in {response.request.path}"
    if shown is not None:
        assert str(escape(shown)) in body, f"{shown!r} not shown escaped on " \
                                           f"{response.request.path}"
        assert "49x" not in body, "the name was rendered as a template"
    return body


def name_cases():
    for case, name in NAMES.items():
        yield pytest.param(name, id=case)


@pytest.mark.parametrize("name", name_cases())
def test_a_name_with_markup_is_accepted_and_shown_escaped_everywhere(site, admin_user, name):
    visitor = site.client
    single = upload(visitor, "page-single", [(name, image_bytes(70))])
    assert single.status_code == 303, single.get_data(as_text=True)[:500]
    page_id = single.headers["Location"].rsplit("/", 1)[1]
    api = upload(visitor, "api-single", [(name, image_bytes(71))])
    assert api.status_code == 202, api.get_data(as_text=True)[:500]
    stem = name.rsplit(".", 1)[0]
    batch = upload(visitor, "page-zip", [(name, image_bytes(72)), (f"notes {stem}.txt", b"text")],
                   archive_name=stem + ".zip")
    assert batch.status_code == 303, batch.get_data(as_text=True)[:500]
    batch_id = batch.headers["Location"].rsplit("/", 1)[1]
    rows = site.rows()
    shown = rows[page_id][3]
    assert "\x00" not in shown, "a NUL stored in a name"
    assert_harmless_name(shown)
    [member] = [r for r in rows.values() if r[1] == batch_id]
    batch_name = site.batches()[batch_id][1]

    check_html_page(visitor.get(f"/p/{page_id}"), shown)
    check_html_page(visitor.get(f"/p/{api.json['id']}"), shown)
    batch_page = check_html_page(visitor.get(f"/batches/{batch_id}"), member[3])
    assert str(escape(batch_name)) in batch_page
    assert "not an image" in batch_page  # the rejected .txt member, listed
    [rejected] = site.batches()[batch_id][3]
    assert_harmless_name(rejected["name"])
    assert not [c for c in rejected["name"] if unicodedata.category(c) in ("Cc", "Cf")]
    check_html_page(visitor.get("/history"), shown)
    for url in [f"/api/predictions/{page_id}", f"/api/batches/{batch_id}",
                f"/api/batches/{batch_id}/predictions"]:
        answer = visitor.get(url)
        assert answer.status_code == 200 and answer.mimetype == "application/json"
    for url in [f"/api/batches/{batch_id}/results.csv", f"/api/batches/{batch_id}/results.json"]:
        download = visitor.get(url)
        assert download.status_code == 200
        assert download.mimetype in ("text/csv", "application/json")
        assert download.headers["Content-Disposition"].startswith("attachment")
    assert visitor.get(f"/api/predictions/{page_id}").json["filename"] == shown

    admin = site.admin()
    check_html_page(admin.get("/admin/"), shown)
    check_html_page(admin.get(f"/admin/records/{page_id}"), shown)
    check_html_page(admin.get(f"/admin/records/{member[0]}"), member[3])
    export = admin.get("/admin/records.csv")
    assert export.status_code == 200 and export.mimetype == "text/csv"
    exported = {r["id"]: r["filename"] for r in csv.DictReader(
        io.StringIO(export.get_data(as_text=True)))}
    assert exported[page_id] in (shown, "'" + shown)
    if shown[:1] in "=+-@":
        assert exported[page_id] == "'" + shown, "a formula in the CSV export"
    site.check_seed()


@pytest.mark.parametrize("name", [NAMES["right-to-left-override"],
                                  NAMES["terminal-escape-and-bell"], "tab\there.jpg"],
                         ids=["right-to-left-override", "terminal-escape", "tab"])
def test_a_display_name_holds_no_control_or_bidi_characters(site, name):
    response = upload(site.client, "api-single", [(name, image_bytes(80))])
    assert response.status_code == 202
    shown = response.json["filename"]
    assert not [c for c in shown if unicodedata.category(c) in ("Cc", "Cf")], repr(shown)


@pytest.mark.parametrize("route", ["api-batch", "page-batch"])
@pytest.mark.parametrize("name", name_cases())
def test_a_rejected_files_name_is_stored_as_its_display_name(site, route, name):
    """The batch's list of refused files holds the name as it is shown everywhere else:
    no NUL, ESC or U+202E, trimmed to 255 characters."""
    before = site.snapshot()
    response = upload(site.client, route, [("good.jpg", image_bytes(83)), (name, b"no image")])
    assert response.status_code in (202, 303), response.get_data(as_text=True)[:500]
    [batch_id] = set(site.batches()) - {b[0] for b in before.batches}
    [rejected] = site.batches()[batch_id][3]
    assert rejected["name"] == display_name(name), rejected
    assert not [c for c in rejected["name"] if unicodedata.category(c) in ("Cc", "Cf")]
    assert len(rejected["name"]) <= 255 and "not an image" in rejected["error"]
    assert site.client.get(f"/api/batches/{batch_id}").json["rejected"] == [rejected]


@pytest.mark.parametrize("name", ["фото 写真 🍎🍌.jpg", "x" * 1000 + ".jpg",
                                  "é" * 300 + "🍎.jpg"], ids=["scripts-and-emoji", "long",
                                                             "long-multibyte"])
def test_a_unicode_or_long_name_is_kept_or_trimmed_from_the_start(site, name):
    response = upload(site.client, "api-single", [(name, image_bytes(81))])
    assert response.status_code == 202, response.get_data(as_text=True)[:500]
    shown = site.prediction(response.json["id"]).filename
    assert shown == name[-255:], "the end of the name (its extension) is what is kept"


# --- 8. refused uploads whose name holds markup: the error message is escaped ----------------

@pytest.mark.parametrize("route", ["page-single", "page-zip", "api-single"])
def test_the_refusal_of_a_file_with_a_markup_name_is_escaped(site, route):
    name = '"><img src=x onerror=alert(1)><script>alert(1)</script>.jpg'
    before = site.snapshot()
    response = upload(site.client, route, [(name, b"just text, no image")])
    message = assert_refused(site, response, before,
                             "/api/x" if route.startswith("api") else "/upload", (415,))
    assert "<script>alert(1)</script>" in message  # shown, as text
    if route.startswith("page"):
        body = response.get_data(as_text=True)
        assert "<script>alert(1)" not in body and "<img src=x" not in body


# --- 9. bad ids in every path that takes one ------------------------------------------------

BAD_IDS = {
    "traversal": "..%2F..%2Fetc%2Fpasswd",
    "dot-dot": "..",
    "encoded-dot-dot": "%2e%2e",
    "nul": "abc%00def",
    "very-long": "a" * 5000,
    "markup": "%3Cimg%20src=x%20onerror=alert(1)%3E",
    "sql": "'%20OR%20'1'='1",
    "invalid-utf8": "%FF%FE",
    "well-formed-unknown": "0123456789abcdef01234567",
}
ID_ROUTES = {
    # name: (method, path template, needs the admin)
    "result-page": ("GET", "/p/{}", False),
    "image": ("GET", "/images/{}", False),
    "thumbnail": ("GET", "/images/{}/thumbnail", False),
    "batch-page": ("GET", "/batches/{}", False),
    "api-prediction": ("GET", "/api/predictions/{}", False),
    "api-prediction-long-poll": ("GET", "/api/predictions/{}?wait=1", False),
    "api-batch": ("GET", "/api/batches/{}", False),
    "api-batch-predictions": ("GET", "/api/batches/{}/predictions", False),
    "api-batch-csv": ("GET", "/api/batches/{}/results.csv", False),
    "api-batch-json": ("GET", "/api/batches/{}/results.json", False),
    "admin-record": ("GET", "/admin/records/{}", True),
    "admin-review": ("POST", "/admin/records/{}/review", True),
    "admin-retry": ("POST", "/admin/records/{}/retry", True),
    "admin-report-file": ("GET", "/admin/models/1/{}", True),
    # deletion
    "delete-upload": ("POST", "/p/{}/delete", False),
    "delete-batch": ("POST", "/batches/{}/delete", False),
    "admin-delete-record": ("POST", "/admin/records/{}/delete", True),
    "admin-delete-batch": ("POST", "/admin/batches/{}/delete", True),
}


def id_cases():
    for route in ID_ROUTES:
        for case, value in BAD_IDS.items():
            yield pytest.param(route, case, value, id=f"{route}-{case}")


@pytest.mark.parametrize("route, case, value", id_cases())
def test_a_bad_id_is_refused(site, admin_user, route, case, value):
    method, template, needs_admin = ID_ROUTES[route]
    client = site.admin() if needs_admin else site.client
    path = template.format(value)
    data = None
    if method == "POST":
        data = {"csrf_token": csrf_token(client, "/admin/" if needs_admin else "/"),
                "verdict": "right"}
    before = site.snapshot()
    response = client.open(path, method=method, data=data)
    assert_refused(site, response, before, path.split("?")[0], (400, 404))


# --- 10. bad query parameters ---------------------------------------------------------------

BAD_WAITS = {"empty": "", "minus-one": "-1", "word": "abc", "overflow": "1e400",
             "hex": "0x10", "nan": "nan", "over-the-cap": "31", "nul": "%00", "comma": "1,5",
             "markup": "%3Cscript%3Ealert(1)%3C/script%3E"}


@pytest.mark.parametrize("value", BAD_WAITS.values(), ids=BAD_WAITS.keys())
def test_a_bad_wait_is_refused_at_once(site, value):
    before = site.snapshot()
    started = time.monotonic()
    response = site.client.get(f"/api/predictions/{site.seed.id}?wait={value}")
    assert time.monotonic() - started < 1
    assert_refused(site, response, before, "/api/predictions", (400,), ("wait",))


BAD_PAGES = {"zero": "0", "minus": "-1", "float": "1.5", "exponent": "1e3", "plus": "+1",
             "space": "%201", "hex": "0x1", "past-the-cap": "1000001", "huge": "9" * 40,
             "nul": "%00", "arabic-digit": "%D9%A1", "superscript": "%C2%B2"}


@pytest.mark.parametrize("path", ["/admin/", "/admin/api/records"])
@pytest.mark.parametrize("value", BAD_PAGES.values(), ids=BAD_PAGES.keys())
def test_a_bad_page_number_is_refused(site, admin, path, value):
    before = site.snapshot()
    response = admin.get(f"{path}?page={value}")
    assert_refused(site, response, before, path, (400,), ("page",))


BAD_FILTERS = {
    "status-unknown": "status=DONE", "status-markup": "status=%3Cscript%3E",
    "source-unknown": "source=web", "reviewed-with-nul": "reviewed=yes%00",
    "model-version-exponent": "model_version=1e3", "model-version-negative": "model_version=-5",
    "model-version-past-int64": f"model_version={2**63}", "below-inf": "below=inf",
    "below-markup": "below=%3Cimg%20src=x%20onerror=alert(1)%3E",
    "date-from-year-zero": "date_from=0000-01-01", "date-to-words": "date_to=tomorrow",
    "date-from-with-time-and-junk": "date_from=2026-01-01T00:00%3Cscript%3E",
}
FILTER_PATHS = ["/admin/", "/admin/api/records", "/admin/records.csv",
                "/admin/records/retry-failed"]


def filtered(admin, path: str, query: str):
    """A filtered admin path: the list and exports are read, retry-failed is a form."""
    if path.endswith("retry-failed"):
        return admin.post(f"{path}?{query}", data={"csrf_token": csrf_token(admin, "/admin/")})
    return admin.get(f"{path}?{query}")


@pytest.mark.parametrize("path", FILTER_PATHS)
@pytest.mark.parametrize("query", BAD_FILTERS.values(), ids=BAD_FILTERS.keys())
def test_a_bad_filter_is_refused(site, admin, path, query):
    failed = site.add_record(51, status=Status.FAILED, label=None, confidence=None, top_k=None,
                             model_version=None, error="Serving was down")
    before = site.snapshot()
    response = filtered(admin, path, query)
    name = query.split("=")[0]
    assert_refused(site, response, before, path, (400,), (name,))
    assert site.prediction(failed).status == Status.FAILED


@pytest.mark.parametrize("path", FILTER_PATHS)
def test_a_label_filter_with_a_nul_is_not_a_500(site, admin, path):
    before = site.snapshot()
    response = filtered(admin, path, "label=a%00b")
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    assert_unchanged(site, before)


@pytest.mark.parametrize("path", ["/admin/", "/admin/records.csv", "/admin/api/records"])
def test_a_free_text_filter_with_markup_is_shown_escaped(site, admin, path):
    response = admin.get(path, query_string={"label": '"><script>alert(1)</script>'})
    assert response.status_code == 200
    if path == "/admin/":
        check_html_page(response)
        assert "0 match" in response.get_data(as_text=True)


# --- 11. wrong methods ----------------------------------------------------------------------

WRONG_METHODS = [
    ("GET", "/upload"), ("PUT", "/upload"), ("GET", "/api/predictions"),
    ("PUT", "/api/predictions"), ("DELETE", "/api/predictions/{seed}"),
    ("POST", "/api/predictions/{seed}"), ("GET", "/api/batches"), ("PATCH", "/api/batches"),
    ("POST", "/api/batches/{batch}"), ("DELETE", "/api/batches/{batch}/results.csv"),
    ("POST", "/p/{seed}"), ("DELETE", "/images/{seed}"), ("POST", "/history"),
    ("POST", "/batches/{batch}"), ("PUT", "/admin/login"), ("GET", "/admin/logout"),
    ("GET", "/admin/records/{seed}/review"), ("GET", "/admin/records/{seed}/retry"),
    ("DELETE", "/admin/records/{seed}"), ("POST", "/admin/api/records"),
    ("POST", "/admin/records.csv"), ("PUT", "/admin/records/retry-failed"),
    # deletion
    ("GET", "/p/{seed}/delete"), ("DELETE", "/p/{seed}"), ("GET", "/batches/{batch}/delete"),
    ("GET", "/admin/records/{seed}/delete"), ("GET", "/admin/batches/{batch}/delete"),
    ("PUT", "/admin/api/predictions/{seed}"), ("POST", "/admin/api/batches/{batch}"),
]


@pytest.mark.parametrize("method, template", WRONG_METHODS,
                         ids=[f"{m}-{p}" for m, p in WRONG_METHODS])
def test_a_wrong_method_is_refused_with_405(site, method, template):
    batch = upload(site.client, "api-batch", [("a.jpg", image_bytes(90)),
                                              ("b.jpg", image_bytes(91))]).json["id"]
    path = template.format(seed=site.seed.id, batch=batch)
    before = site.snapshot()
    response = site.client.open(path, method=method, data={"verdict": "right"})
    assert_refused(site, response, before, path, (405,))


# --- 12. CSRF tokens on every form ----------------------------------------------------------

def other_sessions_token(site) -> str:
    return csrf_token(site.app.test_client(), "/")


CSRF_CASES = {"missing": None, "empty": "", "garbage": "not-a-token",
              "another-sessions": "OTHER", "tampered": "TAMPERED"}
FORMS = ["/upload", "/admin/login", "/admin/logout", "/admin/records/{done}/review",
         "/admin/records/{failed}/retry", "/admin/records/retry-failed",
         "/p/{done}/delete", "/admin/records/{done}/delete"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("token", CSRF_CASES.values(), ids=CSRF_CASES.keys())
def test_a_form_without_a_valid_csrf_token_is_refused(site, admin, form, token):
    done = site.add_record(52)
    failed = site.add_record(53, status=Status.FAILED, label=None, confidence=None, top_k=None,
                             model_version=None, error="Serving was down")
    path = form.format(done=done, failed=failed)
    client = site.client if path in ("/upload", "/admin/login") else admin
    good = csrf_token(client, "/" if path == "/upload" else "/admin/login"
                      if path == "/admin/login" else "/admin/")
    if token == "OTHER":
        token = other_sessions_token(site)
    elif token == "TAMPERED":
        token = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    parts = [("username", None, ADMIN_NAME.encode()), ("password", None, ADMIN_PASSWORD.encode()),
             ("verdict", None, b"wrong"), ("true_label", None, b"pear"),
             ("images", "a.jpg", image_bytes(54))]
    if token is not None:
        parts.insert(0, ("csrf_token", None, token.encode()))
    before = site.snapshot()
    response = post_multipart(client, path, parts)
    assert_refused(site, response, before, path, (400,), ("reload the page",))
    assert site.prediction(failed).status == Status.FAILED
    assert site.prediction(done).correct is None
    if path.startswith("/admin/") and path != "/admin/login":
        assert admin.get("/admin/api/stats").status_code == 200, "logged out"


# --- 13. the back office's forms ------------------------------------------------------------

LOGINS = {
    "empty": ("", "", (400,)),
    "user-name-too-long": ("a" * 65, ADMIN_PASSWORD, (400,)),
    "password-too-long": (ADMIN_NAME, "p" * 257, (400,)),
    "markup-user-name": ('"><script>alert(1)</script>', "whatever", (401,)),
    "sql-user-name": ("admin' --", "whatever", (401,)),
    "right-password-other-case-name": (ADMIN_NAME.upper(), ADMIN_PASSWORD, (401,)),
    "unicode-user-name": ("ädmin🍎", ADMIN_PASSWORD, (401,)),
    "user-name-with-nul": (ADMIN_NAME + "\x00", ADMIN_PASSWORD, (400, 401)),
}


@pytest.mark.parametrize("case", list(LOGINS))
def test_a_bad_login_is_refused_and_logs_nobody_in(site, admin_user, case):
    username, password, statuses = LOGINS[case]
    client = site.app.test_client()
    token = csrf_token(client, "/admin/login")
    before = site.snapshot()
    response = client.post("/admin/login", data={"username": username, "password": password,
                                                 "csrf_token": token})
    assert_refused(site, response, before, "/admin/login", statuses)
    assert client.get("/admin/api/stats").status_code == 401
    if "script" in username:
        assert str(escape(username)) in response.get_data(as_text=True)


REVIEWS = {
    "no-verdict": ({"true_label": "pear"}, 400),
    "unknown-verdict": ({"verdict": "maybe"}, 400),
    "an-unknown-verdict-before-a-known-one": ({"verdict": ["maybe", "right"]}, 400),
    "wrong-without-a-label": ({"verdict": "wrong", "true_label": " \t "}, 400),
    "label-too-long": ({"verdict": "wrong", "true_label": "p" * 256}, 400),
}


@pytest.mark.parametrize("case", list(REVIEWS))
def test_a_bad_review_is_refused_and_changes_nothing(site, admin, case):
    data, status = REVIEWS[case]
    done = site.add_record(55)
    before = site.snapshot()
    token = csrf_token(admin, f"/admin/records/{done}")
    response = admin.post(f"/admin/records/{done}/review", data={"csrf_token": token, **data})
    assert_refused(site, response, before, "/admin/records", (status,))


def test_a_review_of_an_unlabelled_record_is_refused_with_409(site, admin):
    failed = site.add_record(56, status=Status.FAILED, label=None, confidence=None, top_k=None,
                             model_version=None, error="Serving was down")
    before = site.snapshot()
    response = admin.post(f"/admin/records/{failed}/review",
                          data={"csrf_token": csrf_token(admin, "/admin/"), "verdict": "right"})
    assert_refused(site, response, before, "/admin/records", (409,))


TRUE_LABELS = {
    "script-tag": "<script>alert(1)</script>",
    "img-onerror": '"><img src=x onerror=alert(1)>',
    "template-syntax": "{{7*7}}",
    "spreadsheet-formula": "=1+1",
    "emoji": "🍎 apple",
    "nul-byte": "pe\x00ar",
}


def true_label_cases():
    for case, label in TRUE_LABELS.items():
        yield pytest.param(label, id=case)


@pytest.mark.parametrize("label", true_label_cases())
def test_a_true_label_with_markup_is_stored_and_shown_escaped(site, admin, label):
    done = site.add_record(57)
    token = csrf_token(admin, f"/admin/records/{done}")
    response = admin.post(f"/admin/records/{done}/review",
                          data={"csrf_token": token, "verdict": "wrong", "true_label": label})
    assert response.status_code in (303, 400), response.get_data(as_text=True)[:500]
    stored = site.prediction(done).true_label
    if response.status_code == 400:
        assert stored is None
        return
    assert stored and "\x00" not in stored
    record = check_html_page(admin.get(f"/admin/records/{done}"), stored)
    assert f"marked wrong: {escape(stored)}" in record
    check_html_page(admin.get("/admin/?reviewed=wrong"), None)
    assert str(escape(stored)) in admin.get("/admin/?reviewed=wrong").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(admin.get("/admin/records.csv").get_data(
        as_text=True))))
    [row] = [r for r in rows if r["id"] == done]
    assert row["true_label"] == ("'" + stored if stored[:1] in "=+-@" else stored)


# --- 14. retrying: only failed records, only with a token, only for administrators ----------

def test_retrying_a_record_that_did_not_fail_is_refused_with_409(site, admin):
    done = site.add_record(58)
    token = csrf_token(admin, "/admin/")
    before = site.snapshot()
    for record in (done, site.seed.id):  # done, and queued
        response = admin.post(f"/admin/records/{record}/retry", data={"csrf_token": token})
        assert_refused(site, response, before, "/admin/records", (409,), ("failed",))


def test_an_anonymous_retry_is_sent_to_the_login_and_changes_nothing(site):
    failed = site.add_record(59, status=Status.FAILED, label=None, confidence=None, top_k=None,
                             model_version=None, error="Serving was down")
    token = csrf_token(site.client, "/admin/login")
    before = site.snapshot()
    for path in (f"/admin/records/{failed}/retry", "/admin/records/retry-failed"):
        response = site.client.post(path, data={"csrf_token": token})
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/admin/login")
        assert_unchanged(site, before)
    assert site.prediction(failed).status == Status.FAILED


# --- 15. found while building the corpus ----------------------------------------------------

def test_the_markup_check_catches_what_it_looks_for():
    """The check every HTML answer above goes through is not blind."""
    for injected in ['<p>"><img src=x onerror=alert(1)></p>', "<h1><script>alert(1)</script>",
                     "<a href=\"javascript:alert(1)\">x</a>", "<div onmouseover='x'>",
                     "<a href='data:text/html,<script>alert(1)</script>'>x</a>",
                     '<img src="https://evil.example/x.png">', "<iframe src=/x></iframe>"]:
        with pytest.raises(AssertionError, match="markup from the input"):
            assert_no_markup_injected(injected)
    assert_no_markup_injected('<p>&#34;&gt;&lt;img src=x onerror=alert(1)&gt;</p>'
                              '<script src="/static/poll.js"></script><img src="/images/x">')


@pytest.mark.parametrize("route", ["api-single", "api-batch", "page-single"])
def test_a_nul_in_a_file_name_is_dropped_or_refused_never_a_500(site, route):
    before = site.snapshot()
    response = upload(site.client, route, [("a\x00b.jpg", image_bytes(82))])
    assert response.status_code < 500, "a 500, and the image file stays behind: " \
        f"{sorted(set(site.files()) - {f for f, _ in before.files})}"
    if response.status_code >= 400:
        assert_unchanged(site, before)
    else:
        new = [r for r in site.rows().values() if r not in before.predictions]
        assert new and all("\x00" not in r[3] for r in new), [r[3] for r in new]


@pytest.mark.parametrize("method, path", [("GET", "/upload"), ("DELETE", "/api/predictions/x"),
                                          ("GET", "/admin/logout")])
def test_a_405_names_the_methods_allowed(site, method, path):
    response = site.client.open(path, method=method)
    assert response.status_code == 405
    assert response.headers.get("Allow"), dict(response.headers)


@pytest.mark.parametrize("target", [
    "/\t/evil.example", "/%0d%0aSet-Cookie:%20x=1", " //evil.example", "http:/evil.example",
    "%2F%2Fevil.example", "/\\/evil.example", "///evil.example", "\x00/evil.example",
    "https:evil.example",
], ids=["tab", "crlf", "leading-space", "scheme-one-slash", "encoded-slashes",
        "slash-backslash-slash", "three-slashes", "nul", "scheme-no-slash"])
def test_a_login_never_redirects_off_the_site_or_splits_headers(site, admin_user, target):
    client = site.app.test_client()
    token = csrf_token(client, "/admin/login")
    response = client.post("/admin/login", query_string={"next": target},
                           data={"username": ADMIN_NAME, "password": ADMIN_PASSWORD,
                                 "csrf_token": token})
    if response.status_code == 400:  # refused outright: fine too, if nobody is logged in
        assert client.get("/admin/api/stats").status_code == 401
        return
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    location = response.headers["Location"]
    assert "\r" not in location and "\n" not in location and "Set-Cookie" not in str(
        response.headers.getlist("Set-Cookie"))
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    assert "evil.example" not in location, location


def test_a_forged_forwarded_for_header_does_not_reset_the_login_limit(site, admin_user):
    client = site.app.test_client()
    token = csrf_token(client, "/admin/login")
    for i in range(10):
        response = client.post("/admin/login", headers={"X-Forwarded-For": f"10.0.0.{i}"},
                               data={"username": ADMIN_NAME, "password": "guess",
                                     "csrf_token": token})
        assert response.status_code == 401, i
    response = client.post("/admin/login", headers={"X-Forwarded-For": "10.0.1.1"},
                           data={"username": ADMIN_NAME, "password": ADMIN_PASSWORD,
                                 "csrf_token": token})
    assert response.status_code == 429
    assert "too many login attempts" in message_of(response, "/admin/login")
    assert client.get("/admin/api/stats").status_code == 401
