"""Uploads through the JSON API and the page form: what is refused (with which
status and message, storing nothing), and what is accepted, stored and queued.

No Serving and no worker: accepted uploads stay queued. Every test runs on
SQLite and PostgreSQL (see tests/web_fixtures.py).
"""

from __future__ import annotations

import hashlib
import html
import io
import re
import struct
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from PIL import Image
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from core.db import Batch, Prediction
from tests.factories import (
    animated_gif,
    animated_png,
    animated_webp,
    draw_photo,
    encoded,
    noise_png,
    oriented_jpeg,
    part,
    photo_bytes,
    png_claiming,
    session,
    zip64_ended,
    zip_bytes,
    zip_of_empty_files,
)
from tests.web_fixtures import POSTGRES, csrf_token

#: Limits small enough to cross with photos made in a few milliseconds.
SMALL = {"MAX_IMAGE_BYTES": 100_000, "MAX_REQUEST_BYTES": 2**20, "MAX_IMAGE_PIXELS": 50_000,
         "MAX_BATCH_IMAGES": 3}
DEAD_REDIS = "redis://127.0.0.1:1/0"


# --- looking at what was stored -------------------------------------------------------------

def services(app):
    return app.extensions["classifier"]


def rows(app, model) -> list:
    with services(app).db.session() as session:
        return list(session.scalars(select(model)))


def count(app, model) -> int:
    with services(app).db.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def stored_files(env: dict[str, str]) -> list[Path]:
    root = Path(env["UPLOAD_DIR"])
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def assert_nothing_stored(app, env: dict[str, str]) -> None:
    assert count(app, Prediction) == 0
    assert count(app, Batch) == 0
    assert stored_files(env) == []


def assert_json_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.is_json, response.get_data(as_text=True)[:500]
    assert list(response.json) == ["error"]
    message = response.json["error"]
    for word in words:
        assert word in message, message
    return message


def post_image(client, data: bytes, name: str = "photo.jpg"):
    return client.post("/api/predictions", data={"image": part(data, name)})


def post_batch(client, images: list[tuple[bytes, str]] | None = None,
               archive: tuple[bytes, str] | None = None):
    form: dict = {}
    if images:
        form["images"] = [part(data, name) for data, name in images]
    if archive:
        form["archive"] = part(*archive)
    return client.post("/api/batches", data=form)


def post_page(client, *images: tuple[bytes, str], archive: tuple[bytes, str] | None = None,
              token: str | None = None):
    form: dict = {"csrf_token": token or csrf_token(client, "/"),
                  "images": [part(data, name) for data, name in images] or [part(b"", "")],
                  "archive": part(*archive) if archive else part(b"", "")}
    return client.post("/upload", data=form)


def page_error(response) -> str:
    """The message the upload page shows above its form."""
    body = response.get_data(as_text=True)
    assert 'id="upload"' in body, body[:500]
    match = re.search(r'id="upload-error">([^<]*)<', body)
    assert match, body[:500]
    return html.unescape(match.group(1))


# --- fixtures -------------------------------------------------------------------------------

@pytest.fixture
def small_limits(request, env, monkeypatch) -> dict[str, int]:
    """SMALL as the site's limits; request it before `client` or `app`."""
    for key, value in SMALL.items():
        monkeypatch.setenv(key, str(value))
    settings = services(request.getfixturevalue("app")).settings
    assert settings.max_image_file_bytes == SMALL["MAX_IMAGE_BYTES"], "app made before small_limits"
    return SMALL


@pytest.fixture
def redis_down(request, env, monkeypatch) -> str:
    """Redis unreachable from the site; request it before `client` or `app`."""
    monkeypatch.setenv("REDIS_URL", DEAD_REDIS)
    settings = services(request.getfixturevalue("app")).settings
    assert settings.redis_url == DEAD_REDIS, "app made before redis_down"
    return DEAD_REDIS


# --- 1. what a file is: from its content ----------------------------------------------------

def test_an_empty_file_is_refused_with_400(client, app, env):
    assert_json_error(post_image(client, b""), 400, "photo.jpg", "empty")
    assert_nothing_stored(app, env)


def test_a_request_without_the_image_field_is_refused_with_400(client, app, env):
    response = client.post("/api/predictions", data={"file": part(photo_bytes(), "a.jpg")})
    assert_json_error(response, 400, "'image'")
    assert_json_error(client.post("/api/predictions"), 400, "'image'")
    assert_nothing_stored(app, env)


def test_text_named_like_a_jpeg_is_refused_with_415(client, app, env):
    text = b"Hello, this is not a photo at all.\n" * 20
    assert_json_error(post_image(client, text, "photo.jpg"), 415, "photo.jpg", "not an image")
    assert_json_error(post_image(client, bytes(range(256)) * 8, "photo.jpg"), 415)
    assert_nothing_stored(app, env)


def test_a_tiff_image_is_refused_with_415_as_unsupported(client, app, env):
    message = assert_json_error(post_image(client, photo_bytes(fmt="TIFF"), "scan.tif"), 415)
    assert "not an image of a type we take (JPEG, PNG, GIF, BMP or WebP)" in message
    assert_nothing_stored(app, env)


def test_a_png_named_jpg_is_accepted_and_stored_as_png(client, app, env):
    data = photo_bytes("triangle", 3, fmt="PNG")
    created = post_image(client, data, "photo.jpg")
    assert created.status_code == 202, created.json
    [p] = rows(app, Prediction)
    assert (p.filename, p.image_format, p.size_bytes) == ("photo.jpg", "png", len(data))
    sha = hashlib.sha256(data).hexdigest()
    assert stored_files(env) == [Path(env["UPLOAD_DIR"]) / sha[:2] / f"{sha}.png"]
    image = client.get(f"/images/{p.id}")
    assert (image.status_code, image.mimetype, image.data) == (200, "image/png", data)


def test_a_camera_jpeg_holding_two_pictures_is_accepted_as_a_jpeg(client, app, env):
    data = encoded(draw_photo("circle", 1), "MPO", save_all=True,
                   append_images=[draw_photo("square", 2)])
    assert data[:3] == b"\xff\xd8\xff"  # a JPEG to any decoder
    created = post_image(client, data, "camera.jpg")
    assert created.status_code == 202, created.json
    [p] = rows(app, Prediction)
    assert (p.image_format, p.width, p.height) == ("jpg", 160, 120)


@pytest.mark.parametrize("sent, shown", [
    ("../../etc/photo.jpg", "etc/photo.jpg"),
    ("/var/tmp/./photo.jpg", "var/tmp/photo.jpg"),
    ("..\\..\\photo.jpg", "photo.jpg"),
], ids=["climbing", "absolute", "backslashes"])
def test_a_file_name_never_climbs_out_or_starts_at_the_root(client, app, env, sent, shown):
    quoted = sent.replace("\\", "\\\\").encode()  # as the multipart header escapes it
    body = (b'--B\r\nContent-Disposition: form-data; name="image"; filename="' + quoted
            + b'"\r\nContent-Type: image/jpeg\r\n\r\n' + photo_bytes() + b"\r\n--B--\r\n")
    created = client.post("/api/predictions", data=body,
                          content_type="multipart/form-data; boundary=B")
    assert created.status_code == 202, created.json
    assert created.json["filename"] == shown
    assert [p.filename for p in rows(app, Prediction)] == [shown]
    [file] = stored_files(env)
    assert file.parent.parent == Path(env["UPLOAD_DIR"])


# --- 2. sizes -------------------------------------------------------------------------------

def test_an_image_over_the_byte_limit_is_refused_with_413(small_limits, client, app, env):
    data = noise_png(200)
    assert SMALL["MAX_IMAGE_BYTES"] < len(data) < SMALL["MAX_REQUEST_BYTES"]
    assert_json_error(post_image(client, data, "big.png"), 413, "big.png", "limit")
    assert_nothing_stored(app, env)


@pytest.mark.parametrize("route", ["/api/predictions", "/api/batches"])
def test_a_request_over_the_request_limit_answers_413_json(small_limits, client, app, env,
                                                            route):
    data = b"\xff\xd8\xff" + bytes(SMALL["MAX_REQUEST_BYTES"])
    field = "image" if route == "/api/predictions" else "images"
    response = client.post(route, data={field: part(data, "huge.jpg")})
    assert_json_error(response, 413, "limit")
    assert_nothing_stored(app, env)


def test_a_page_upload_over_the_request_limit_answers_413_not_500(small_limits, client, app,
                                                                  env):
    data = bytes(SMALL["MAX_REQUEST_BYTES"] + 1)
    response = post_page(client, (data, "huge.jpg"))
    assert response.status_code == 413
    assert "limit" in response.get_data(as_text=True)
    assert_nothing_stored(app, env)


# --- 3. pixels ------------------------------------------------------------------------------

def test_an_image_over_the_pixel_limit_is_refused_with_413(small_limits, client, app, env):
    data = photo_bytes(size=(300, 200))  # 60 000 pixels, a few kB
    assert len(data) < SMALL["MAX_IMAGE_BYTES"]
    assert_json_error(post_image(client, data, "wide.jpg"), 413, "wide.jpg", "300x200")
    assert_nothing_stored(app, env)


def test_a_hand_made_png_header_is_read_as_its_claimed_size(client, app, env):
    """The decompression-bomb PNGs below are well-formed: one claiming a size within the
    limits is decoded, and refused only because its pixel data runs out."""
    assert Image.open(io.BytesIO(png_claiming(300, 200))).size == (300, 200)
    assert_json_error(post_image(client, png_claiming(300, 200), "short.png"), 400, "damaged")
    assert_nothing_stored(app, env)


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (8_000, 6_000)],
                         ids=["over-pillows-own-limit", "over-the-sites-limit"])
def test_a_decompression_bomb_is_refused_with_413_without_decoding(client, app, env,
                                                                   width, height):
    bomb = png_claiming(width, height)
    assert len(bomb) < 200
    started = time.monotonic()
    response = post_image(client, bomb, "bomb.png")
    elapsed = time.monotonic() - started
    assert_json_error(response, 413, "bomb.png", "pixels")
    assert elapsed < 2, f"{elapsed:.1f} s: the pixels were decoded"
    assert_nothing_stored(app, env)


def test_the_pixel_limit_message_tells_the_size_from_the_limit(client):
    message = assert_json_error(post_image(client, png_claiming(8000, 5050), "big.png"), 413)
    figures = re.search(r"is ([\d.]+) megapixels; the limit is ([\d.]+)", message)
    assert figures, message
    assert figures.group(1) != figures.group(2), message


# --- 4. damaged files -----------------------------------------------------------------------

def test_a_jpeg_cut_in_half_is_refused_with_400_damaged(client, app, env):
    data = photo_bytes("circle", 9)
    response = post_image(client, data[:len(data) // 2], "half.jpg")
    assert_json_error(response, 400, "half.jpg", "damaged")
    assert_nothing_stored(app, env)


def _webp_cut_in_half() -> bytes:
    data = photo_bytes(fmt="WEBP")
    return data[:len(data) // 2]


def _bmp_with_unknown_header() -> bytes:
    data = bytearray(photo_bytes(fmt="BMP"))
    data[14:18] = struct.pack("<I", 13)  # the DIB header's size: no such header exists
    return bytes(data)


@pytest.mark.parametrize("data, name", [
    (_webp_cut_in_half(), "half.webp"),
    (photo_bytes()[:30], "head.jpg"),
    (_bmp_with_unknown_header(), "odd.bmp"),
], ids=["webp-cut-in-half", "jpeg-cut-in-its-header", "bmp-unknown-header"])
def test_a_file_damaged_in_its_header_is_refused_with_4xx_not_500(client, app, env, data, name):
    response = post_image(client, data, name)
    assert response.status_code in (400, 415), response.json
    assert_json_error(response, response.status_code, name)
    assert_nothing_stored(app, env)


# --- 5. EXIF orientation --------------------------------------------------------------------

def test_a_photo_with_exif_rotation_is_stored_upright(client, app, env):
    data = oriented_jpeg(200, 100, orientation=6)
    assert Image.open(io.BytesIO(data)).size == (200, 100)
    created = post_image(client, data, "sideways.jpg")
    assert created.status_code == 202, created.json
    assert (created.json["width"], created.json["height"]) == (100, 200)
    [p] = rows(app, Prediction)
    assert (p.width, p.height, p.image_format) == (100, 200, "jpg")
    [file] = stored_files(env)
    stored = file.read_bytes()
    assert file.name == f"{p.image_sha256}.jpg"
    assert hashlib.sha256(stored).hexdigest() == p.image_sha256 != hashlib.sha256(data).hexdigest()
    assert p.size_bytes == len(stored)
    with Image.open(file) as image:
        assert image.size == (100, 200)
        assert image.getexif().get(0x0112, 1) == 1  # not to be turned a second time


def test_a_photo_without_rotation_is_stored_byte_for_byte(client, app, env):
    data = oriented_jpeg(200, 100, orientation=1)
    assert post_image(client, data).status_code == 202
    [file] = stored_files(env)
    assert file.read_bytes() == data


# --- 6. accepted uploads --------------------------------------------------------------------

def test_an_accepted_upload_is_answered_202_stored_by_hash_and_queued(client, app, env):
    data = photo_bytes("circle", 1)
    created = post_image(client, data, "cat.jpg")
    assert created.status_code == 202, created.json
    body = created.json
    assert body["status"] == "queued"
    assert (body["filename"], body["source"], body["batch_id"]) == ("cat.jpg", "api", None)
    assert (body["width"], body["height"], body["size_bytes"]) == (160, 120, len(data))
    assert body["url"] == f"/api/predictions/{body['id']}"
    assert body["page_url"] == f"/p/{body['id']}"
    assert created.headers["Location"].endswith(body["url"])

    [p] = rows(app, Prediction)
    sha = hashlib.sha256(data).hexdigest()
    assert (p.id, p.status, p.image_sha256, p.image_format) == (body["id"], "queued", sha, "jpg")
    assert p.job_id == f"predict-{p.id}"
    assert p.job_id in services(app).queue.job_ids
    assert stored_files(env) == [Path(env["UPLOAD_DIR"]) / sha[:2] / f"{sha}.jpg"]
    assert stored_files(env)[0].read_bytes() == data

    read = client.get(body["url"])
    assert read.status_code == 200
    assert read.json["status"] == "queued" and read.json["id"] == p.id


def test_the_same_image_uploaded_twice_is_stored_once_with_two_records(client, app, env):
    data = photo_bytes("square", 2)
    first, second = post_image(client, data, "a.jpg"), post_image(client, data, "b.jpg")
    assert first.status_code == second.status_code == 202
    assert first.json["id"] != second.json["id"]
    records = rows(app, Prediction)
    assert sorted(p.filename for p in records) == ["a.jpg", "b.jpg"]
    assert {p.image_sha256 for p in records} == {hashlib.sha256(data).hexdigest()}
    assert len({p.job_id for p in records}) == 2
    assert len(stored_files(env)) == 1


# --- 7. batches -----------------------------------------------------------------------------

def test_a_batch_of_several_images_is_accepted_with_its_total(client, app, env):
    images = [(photo_bytes(kind, i), f"{kind}.jpg")
              for i, kind in enumerate(["circle", "square", "triangle"])]
    created = post_batch(client, images)
    assert created.status_code == 202, created.json
    body = created.json
    assert (body["total"], body["rejected"], body["counts"]["queued"]) == (3, [], 3)
    assert body["url"] == f"/api/batches/{body['id']}"
    assert created.headers["Location"].endswith(body["url"])
    [batch] = rows(app, Batch)
    assert (batch.id, batch.total) == (body["id"], 3)
    records = rows(app, Prediction)
    assert sorted(p.filename for p in records) == ["circle.jpg", "square.jpg", "triangle.jpg"]
    assert {(p.batch_id, p.status, p.source) for p in records} == {(batch.id, "queued", "batch")}
    assert all(p.job_id for p in records)
    assert {p.job_id for p in records} <= set(services(app).batch_queue.job_ids)
    assert len(stored_files(env)) == 3


def test_a_zip_of_images_and_a_text_file_lists_the_text_file_as_rejected(client, app, env):
    archive = zip_bytes({"photos/one.jpg": photo_bytes("circle", 1),
                         "photos/two.png": photo_bytes("square", 2, fmt="PNG"),
                         "photos/notes.txt": b"taken on holiday\n"})
    created = post_batch(client, archive=(archive, "photos.zip"))
    assert created.status_code == 202, created.json
    body = created.json
    assert (body["name"], body["total"], body["counts"]["queued"]) == ("photos.zip", 2, 2)
    [rejected] = body["rejected"]
    assert rejected["name"] == "photos/notes.txt"
    assert "not an image" in rejected["error"]
    assert sorted(p.filename for p in rows(app, Prediction)) == ["photos/one.jpg",
                                                                 "photos/two.png"]
    assert len(stored_files(env)) == 2
    assert client.get(body["url"]).json["rejected"] == body["rejected"]


def test_images_and_a_zip_in_one_request_make_one_batch(client, app, env):
    archive = zip_bytes({"in-zip.jpg": photo_bytes("circle", 11)})
    created = post_batch(client, [(photo_bytes("square", 12), "loose.jpg")],
                         archive=(archive, "more.zip"))
    assert created.status_code == 202, created.json
    assert created.json["total"] == 2
    assert sorted(p.filename for p in rows(app, Prediction)) == ["in-zip.jpg", "loose.jpg"]


@pytest.mark.parametrize("files, status", [
    ([(b"just text", "a.jpg"), (b"more text", "b.png")], 415),
    ([(b"", "empty.jpg"), (b"just text", "a.jpg")], 415),
    ([(b"", "empty.jpg"), (b"", "also-empty.jpg")], 400),
], ids=["all-text", "empty-and-text", "all-empty"])
def test_a_batch_with_no_good_file_is_refused_storing_nothing(client, app, env, files, status):
    message = assert_json_error(post_batch(client, files), status)
    assert files[0][1] in message
    assert_nothing_stored(app, env)


def test_a_batch_request_without_files_is_refused_with_400(client, app, env):
    assert_json_error(client.post("/api/batches", data={"name": "x"}), 400, "'images'")
    assert_nothing_stored(app, env)


def test_a_zip_holding_only_text_is_refused_storing_nothing(client, app, env):
    archive = zip_bytes({"readme.txt": b"hello", "list.csv": b"a,b\n"})
    assert_json_error(post_batch(client, archive=(archive, "notes.zip")), 415)
    assert_nothing_stored(app, env)


def test_a_file_that_is_not_a_zip_is_refused_with_400(client, app, env):
    not_a_zip = b"PK\x03\x04" + b"garbage " * 100
    response = post_batch(client, archive=(not_a_zip, "photos.zip"))
    assert_json_error(response, 400, "photos.zip", "not a valid .zip")
    assert_nothing_stored(app, env)


def _zip_with_a_corrupt_member() -> bytes:
    data = bytearray(zip_bytes({"photo.png": photo_bytes(fmt="PNG", compress_level=0)}))
    for i in range(60, 200):  # inside the deflated data of the one member
        data[i] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("archive", [
    _zip_with_a_corrupt_member(),
    zip_bytes({"photo.jpg": photo_bytes()})[30:],
], ids=["corrupt-member-data", "missing-its-first-bytes"])
def test_a_damaged_zip_is_refused_with_400_not_500(client, app, env, archive):
    assert_json_error(post_batch(client, archive=(archive, "photos.zip")), 400, "photos.zip")
    assert_nothing_stored(app, env)


def test_a_zip_with_more_files_than_a_batch_holds_is_refused_with_413(small_limits, client,
                                                                      app, env):
    archive = zip_bytes({f"p{i}.jpg": photo_bytes("circle", i) for i in range(4)})
    assert_json_error(post_batch(client, archive=(archive, "many.zip")), 413, "4 files", "3")
    assert_nothing_stored(app, env)


def test_more_image_fields_than_a_batch_holds_are_refused_with_413(small_limits, client, app,
                                                                   env):
    images = [(photo_bytes("square", i), f"p{i}.jpg") for i in range(4)]
    assert_json_error(post_batch(client, images), 413, "4 files")
    assert_nothing_stored(app, env)


def test_a_zip_member_over_the_byte_limit_is_rejected_and_the_rest_kept(small_limits, client,
                                                                        app, env):
    big = noise_png(200)
    assert SMALL["MAX_IMAGE_BYTES"] < len(big)
    archive = zip_bytes({"big.png": big, "small.jpg": photo_bytes()}, zipfile.ZIP_STORED)
    assert len(archive) < SMALL["MAX_REQUEST_BYTES"]
    created = post_batch(client, archive=(archive, "mixed.zip"))
    assert created.status_code == 202, created.json
    assert created.json["total"] == 1
    [rejected] = created.json["rejected"]
    assert rejected["name"] == "big.png" and "limit" in rejected["error"]
    assert [p.filename for p in rows(app, Prediction)] == ["small.jpg"]
    assert len(stored_files(env)) == 1


def test_a_zip_whose_only_member_is_over_the_byte_limit_is_refused_with_413(small_limits,
                                                                            client, app, env):
    archive = zip_bytes({"big.png": noise_png(200)}, zipfile.ZIP_STORED)
    assert_json_error(post_batch(client, archive=(archive, "big.zip")), 413, "big.png", "limit")
    assert_nothing_stored(app, env)


def test_a_zip_member_over_the_byte_limit_is_refused_as_the_same_file_sent_alone(
        small_limits, client, app, env):
    big = noise_png(320)  # about 0.3 MB
    loose = post_batch(client, [(big, "big.png"), (photo_bytes(), "small.jpg")])
    zipped = post_batch(client, archive=(zip_bytes({"big.png": big, "small.jpg": photo_bytes()},
                                                   zipfile.ZIP_STORED), "big.zip"))
    assert loose.status_code == zipped.status_code == 202
    assert zipped.json["rejected"] == loose.json["rejected"]


def test_hidden_files_and_macos_folders_in_a_zip_are_ignored(small_limits, client, app, env):
    junk = b"\x00\x05\x16\x07 resource fork"
    archive = zip_bytes({
        "trip/a.jpg": photo_bytes("circle", 1), "trip/b.jpg": photo_bytes("square", 2),
        "trip/c.jpg": photo_bytes("triangle", 3),
        "__MACOSX/trip/._a.jpg": junk, "__MACOSX/trip/._b.jpg": junk, "trip/.DS_Store": junk,
        ".git/config": b"[core]\n", "trip/.hidden.jpg": photo_bytes("circle", 4),
    })
    created = post_batch(client, archive=(archive, "trip.zip"))  # 3 images: the batch limit
    assert created.status_code == 202, created.json
    assert (created.json["total"], created.json["rejected"]) == (3, [])
    assert sorted(p.filename for p in rows(app, Prediction)) == ["trip/a.jpg", "trip/b.jpg",
                                                                 "trip/c.jpg"]


# --- 8. Redis unreachable -------------------------------------------------------------------

def test_an_upload_while_redis_is_down_is_accepted_and_stays_queued(redis_down, client, app,
                                                                    env):
    started = time.monotonic()
    created = post_image(client, photo_bytes("triangle", 6), "t.jpg")
    assert time.monotonic() - started < 5
    assert created.status_code == 202, created.json
    assert created.json["status"] == "queued"
    [p] = rows(app, Prediction)
    assert (p.id, p.status, p.job_id) == (created.json["id"], "queued", f"predict-{p.id}")
    assert len(stored_files(env)) == 1
    assert client.get(created.json["url"]).json["status"] == "queued"


def test_a_batch_while_redis_is_down_is_accepted_and_stays_queued(redis_down, client, app, env):
    images = [(photo_bytes("circle", i), f"{i}.jpg") for i in range(3)]
    created = post_batch(client, images)
    assert created.status_code == 202, created.json
    assert created.json["total"] == 3
    records = rows(app, Prediction)
    assert len(records) == 3
    assert all(p.status == "queued" and p.job_id for p in records)
    assert len(stored_files(env)) == 3


def test_a_long_poll_while_redis_is_down_still_answers(redis_down, client, app, env):
    created = post_image(client, photo_bytes(), "t.jpg")
    started = time.monotonic()
    read = client.get(f"{created.json['url']}?wait=1")
    assert 0.9 <= time.monotonic() - started < 5
    assert (read.status_code, read.json["status"]) == (200, "queued")


# --- 9. reading a prediction ----------------------------------------------------------------

def test_an_unknown_prediction_is_404_json(client):
    assert_json_error(client.get("/api/predictions/0123456789abcdef01234567"), 404)
    assert_json_error(client.get("/api/predictions/nope?wait=1"), 404)


@pytest.mark.parametrize("wait", ["abc", "1000", "-1", "nan", "inf", "31"])
def test_a_bad_wait_is_refused_with_400(client, wait):
    created = post_image(client, photo_bytes())
    assert_json_error(client.get(f"{created.json['url']}?wait={wait}"), 400, "wait")


def test_a_long_poll_on_a_queued_record_answers_queued_after_the_wait(client):
    created = post_image(client, photo_bytes())
    started = time.monotonic()
    read = client.get(f"{created.json['url']}?wait=1")
    elapsed = time.monotonic() - started
    assert (read.status_code, read.json["status"]) == (200, "queued")
    assert 0.9 <= elapsed < 3, elapsed


# --- 10. the page form ----------------------------------------------------------------------

def test_one_image_on_the_page_redirects_to_its_result(client, app, env):
    response = post_page(client, (photo_bytes("circle", 3), "mine.jpg"))
    assert response.status_code == 303
    [p] = rows(app, Prediction)
    assert response.headers["Location"].endswith(f"/p/{p.id}")
    assert (p.source, p.status, p.filename) == ("page", "queued", "mine.jpg")
    assert p.visitor and p.job_id
    page = client.get(f"/p/{p.id}")
    assert page.status_code == 200
    assert "mine.jpg" in page.get_data(as_text=True)
    assert client.get(f"/images/{p.id}").data == stored_files(env)[0].read_bytes()


def test_two_images_on_the_page_redirect_to_their_batch(client, app):
    response = post_page(client, (photo_bytes("circle", 1), "a.jpg"),
                         (photo_bytes("square", 2), "b.jpg"))
    assert response.status_code == 303
    [batch] = rows(app, Batch)
    assert response.headers["Location"].endswith(f"/batches/{batch.id}")
    assert (batch.source, batch.total) == ("page", 2)
    page = client.get(f"/batches/{batch.id}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "a.jpg" in text and "b.jpg" in text


def test_a_zip_on_the_page_redirects_to_its_batch_listing_what_was_rejected(client, app):
    archive = zip_bytes({"a.jpg": photo_bytes(), "notes.txt": b"hi"})
    response = post_page(client, archive=(archive, "holiday.zip"))
    assert response.status_code == 303
    [batch] = rows(app, Batch)
    assert (batch.name, batch.total) == ("holiday.zip", 1)
    text = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "notes.txt" in text and "holiday.zip" in text


def test_the_page_with_no_file_chosen_shows_the_form_again_with_400(client, app, env):
    response = post_page(client)
    assert response.status_code == 400
    assert "choose one or more images" in page_error(response)
    assert_nothing_stored(app, env)


@pytest.mark.parametrize("data, name, status, words", [
    (b"", "empty.jpg", 400, "empty"),
    (b"not a photo\n" * 10, "photo.jpg", 415, "not an image"),
    (photo_bytes(fmt="TIFF"), "scan.tif", 415, "not an image of a type we take"),
], ids=["empty", "text", "tiff"])
def test_a_bad_file_on_the_page_shows_the_form_again_with_the_message(client, app, env, data,
                                                                      name, status, words):
    response = post_page(client, (data, name))
    assert response.status_code == status
    message = page_error(response)
    assert name in message and words in message, message
    assert_nothing_stored(app, env)


def test_bad_files_only_in_a_page_batch_show_the_form_again(client, app, env):
    response = post_page(client, (b"text", "a.jpg"), (b"", "b.jpg"))
    assert response.status_code == 415
    assert "a.jpg" in page_error(response)
    assert_nothing_stored(app, env)


def test_an_image_over_the_limits_on_the_page_shows_the_form_with_413(small_limits, client,
                                                                      app, env):
    response = post_page(client, (photo_bytes(size=(300, 200)), "wide.jpg"))
    assert response.status_code == 413
    assert "300x200" in page_error(response)
    assert_nothing_stored(app, env)


def test_the_page_form_without_its_csrf_token_is_refused(client, app, env):
    response = client.post("/upload", data={"images": part(photo_bytes(), "a.jpg")})
    assert response.status_code == 400
    assert "reload the page" in response.get_data(as_text=True)
    assert_nothing_stored(app, env)


def test_the_history_lists_this_browsers_uploads_only(client, app):
    assert post_page(client, (photo_bytes("circle", 1), "first.jpg")).status_code == 303
    assert post_page(client, (photo_bytes("square", 2), "second.jpg"),
                     (photo_bytes("triangle", 3), "third.jpg")).status_code == 303
    assert post_image(client, photo_bytes("circle", 4), "by-api.jpg").status_code == 202

    mine = client.get("/history")
    assert mine.status_code == 200
    text = mine.get_data(as_text=True)
    for name in ("first.jpg", "second.jpg", "third.jpg"):
        assert name in text
    assert "by-api.jpg" not in text  # the API has no browser session

    other = app.test_client()
    assert post_page(other, (photo_bytes("circle", 5), "theirs.jpg")).status_code == 303
    theirs = other.get("/history").get_data(as_text=True)
    assert "theirs.jpg" in theirs
    assert not any(name in theirs for name in ("first.jpg", "second.jpg", "third.jpg"))
    assert "theirs.jpg" not in client.get("/history").get_data(as_text=True)

    stranger = app.test_client().get("/history")
    assert stranger.status_code == 200
    assert "Nothing yet" in stranger.get_data(as_text=True)


# --- 11. animations: frames times pixels --------------------------------------------------

@pytest.mark.parametrize("make, name", [(animated_gif, "anim.gif"), (animated_png, "anim.png")],
                         ids=["gif", "apng"])
def test_an_animation_over_the_pixel_limit_in_all_its_frames_is_refused_with_413(
        client, app, env, make, name):
    """Each frame within the limit, all of them 10 times over it (Serving's GIF decoder
    reads every frame: 388 MB for this one)."""
    data = make(100, (2000, 2000))
    assert len(data) < 700_000
    started = time.monotonic()
    message = assert_json_error(post_image(client, data, name), 413)
    assert time.monotonic() - started < 5, "were the frames decoded?"
    assert message == (f"{name}: 100 frames of 2000x2000 is 400.0 megapixels decoded; "
                       "the limit is 40.0")
    assert_nothing_stored(app, env)


def test_gif_frames_reaching_past_a_small_screen_count_at_the_size_they_reach(client, app,
                                                                              env):
    data = animated_gif(100, (2000, 2000), screen=(1, 1))
    assert data[6:10] == struct.pack("<HH", 1, 1)
    assert_json_error(post_image(client, data, "tiny-screen.gif"), 413,
                      "100 frames of 2000x2000", "400.0 megapixels")
    assert_nothing_stored(app, env)


@pytest.mark.parametrize("make, stored", [(animated_gif, "gif"), (animated_png, "png")],
                         ids=["gif", "apng"])
def test_an_animation_within_the_pixel_limit_is_accepted(client, app, env, make, stored):
    data = make(5)  # 5 frames of 64x48
    assert Image.open(io.BytesIO(data)).n_frames == 5
    created = post_image(client, data, "small-anim")
    assert created.status_code == 202, created.json
    [p] = rows(app, Prediction)
    assert (p.image_format, p.width, p.height) == (stored, 64, 48)


@pytest.mark.parametrize("frames", [1, 4], ids=["one-frame-animation", "four-frames"])
def test_an_animated_webp_is_refused_with_415_since_serving_cannot_decode_it(client, app, env,
                                                                             frames):
    data = animated_webp(frames)
    assert Image.open(io.BytesIO(data)).n_frames == frames
    assert_json_error(post_image(client, data, "anim.webp"), 415, "anim.webp",
                      "animated WebP", "still image")
    assert_nothing_stored(app, env)


# --- 12. a zip's entries, counted from its end records ------------------------------------

def test_a_zip_listing_200000_entries_is_refused_with_413_before_zipfile_reads_them(
        client, app, env):
    """zipfile would take about 100 MB (and seconds) to list them; the end records say
    how many there are in a few kB."""
    archive = zip_of_empty_files(200_000)  # 19 MB, ended by ZIP64 records
    assert archive[-22:-18] == b"PK\x05\x06" and b"PK\x06\x06" in archive[-98:]
    tracemalloc.start()
    try:
        response = post_batch(client, archive=(archive, "many.zip"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_json_error(response, 413,  # an anonymous batch's limit: ANON_MAX_BATCH_IMAGES
                      "many.zip lists 200,000 entries; a batch holds at most 200 files")
    assert peak < 3 * len(archive), f"{peak / 2**20:.0f} MB: was the directory parsed?"
    assert_nothing_stored(app, env)


def test_a_zip_whose_end_record_understates_its_entries_is_counted_by_its_headers(
        small_limits, client, app, env):
    archive = zip_of_empty_files(50, declared=1)
    assert len(zipfile.ZipFile(io.BytesIO(archive)).infolist()) == 50  # zipfile reads all
    assert_json_error(post_batch(client, archive=(archive, "liar.zip")), 413,
                      "liar.zip lists 50 entries", "at most 3 files")
    assert_nothing_stored(app, env)


def test_a_zip_ended_by_zip64_records_is_read_like_any_other(client, app, env):
    archive = zip64_ended(zip_bytes({"a.jpg": photo_bytes("circle", 1),
                                     "b.jpg": photo_bytes("square", 2)}))
    assert archive[-14:-10] == b"\xff" * 4  # 65,535 entries: the ZIP64 record has the count
    created = post_batch(client, archive=(archive, "zip64.zip"))
    assert created.status_code == 202, created.json
    assert (created.json["total"], created.json["rejected"]) == (2, [])


# --- 13. as many files as a batch holds, in one form ----------------------------------------

@pytest.fixture
def batches_of_1000(request, env, monkeypatch) -> int:
    """A batch limit over werkzeug's default of 1,000 form parts; request it before `app`.
    The anonymous limits and quotas as large (the page's uploads are anonymous)."""
    for name in ("MAX_BATCH_IMAGES", "ANON_MAX_BATCH_IMAGES"):
        monkeypatch.setenv(name, "1000")
    for name in ("ANON_IMAGES_PER_MINUTE", "ANON_IMAGES_PER_HOUR"):
        monkeypatch.setenv(name, "5000")
    assert services(request.getfixturevalue("app")).settings.max_batch_images == 1000
    return 1000


def test_a_batch_at_its_limit_fits_the_form_and_one_more_file_hears_the_count(
        batches_of_1000, client, app, env):
    images = [(photo_bytes("circle", 1), f"{i}.jpg") for i in range(1000)]
    created = post_batch(client, images)
    assert created.status_code == 202, created.get_data(as_text=True)[:500]
    assert created.json["total"] == 1000
    page = post_page(client, *images)  # and the page form's own two fields
    assert page.status_code == 303, page_error(page)
    over = [*images, (photo_bytes("circle", 2), "one-more.jpg")]
    assert_json_error(post_batch(client, over), 413, "1,001 files; a batch holds at most 1,000")
    refused = post_page(client, *over)
    assert refused.status_code == 413
    assert page_error(refused) == "1,001 files; a batch holds at most 1,000"
    assert count(app, Prediction) == 2000


def test_a_form_past_its_parts_limit_is_told_so_not_that_it_is_too_large(
        batches_of_1000, client, app, env):
    form = {"images": part(photo_bytes(), "a.jpg")} | {f"note{i}": "x" for i in range(1200)}
    assert_json_error(client.post("/api/batches", data=form), 413,
                      "the form has more than 1,100 parts")
    assert_nothing_stored(app, env)


# --- 14. the database refusing an upload: no file left behind -------------------------------

@contextmanager
def table_away(url: str, table: str) -> Iterator[None]:
    """`table` renamed out of the site's reach for the block: every write to it fails."""
    with session(url) as renaming:
        renaming.execute(text(f"ALTER TABLE {table} RENAME TO {table}_away"))
    try:
        yield
    finally:
        with session(url) as renaming:
            renaming.execute(text(f"ALTER TABLE {table}_away RENAME TO {table}"))


@contextmanager
def connections_refused(url: str) -> Iterator[None]:
    """The site's PostgreSQL database taking no connections, and its open ones closed."""
    name = make_url(url).database
    with psycopg.connect(POSTGRES, autocommit=True) as server:
        server.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            server.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            yield
        finally:
            server.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@pytest.mark.parametrize("route", ["api", "page"])
def test_an_upload_the_database_refuses_answers_503_and_leaves_no_file(client, app, env,
                                                                        route):
    with table_away(env["DATABASE_URL"], "predictions"):
        if route == "api":
            assert_json_error(post_image(client, photo_bytes("circle", 7), "c.jpg"), 503,
                              "database", "nothing was kept")
        else:
            response = post_page(client, (photo_bytes("circle", 7), "c.jpg"))
            assert response.status_code == 503
            assert "nothing was kept" in page_error(response)
        assert stored_files(env) == []
    assert_nothing_stored(app, env)


def test_a_batch_the_database_refuses_removes_only_the_files_it_added(client, app, env):
    kept = photo_bytes("square", 8)
    first = post_image(client, kept, "kept.jpg")
    assert first.status_code == 202
    before = stored_files(env)
    with table_away(env["DATABASE_URL"], "batches"):
        response = post_batch(client, [(kept, "again.jpg"), (photo_bytes("circle", 9), "n.jpg"),
                                       (photo_bytes("triangle", 10), "m.jpg")])
        assert_json_error(response, 503, "nothing was kept")
    assert stored_files(env) == before, "the new files stayed, or the one there before went"
    assert (count(app, Prediction), count(app, Batch)) == (1, 0)
    assert client.get(f"/images/{first.json['id']}").data == kept


# SQLite has no server to refuse connections (the tests above break it another way).
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_upload_while_postgresql_refuses_connections_answers_503_and_recovers(
        client, app, env):
    assert post_image(client, photo_bytes("circle", 11), "before.jpg").status_code == 202
    before = stored_files(env)
    with connections_refused(env["DATABASE_URL"]):
        assert_json_error(post_image(client, photo_bytes("circle", 12), "during.jpg"), 503,
                          "nothing was kept")
        assert stored_files(env) == before
    after = post_image(client, photo_bytes("circle", 12), "after.jpg")
    assert after.status_code == 202, after.json
    assert count(app, Prediction) == 2


# --- found in review ------------------------------------------------------------------------

def test_a_zip_inflating_past_the_request_limit_is_refused_with_413(env, monkeypatch):
    """Each member under the image limit, together far over: a zip bomb spread thin."""
    from frontend import create_app

    for key, value in {"MAX_IMAGE_BYTES": 400_000, "MAX_REQUEST_BYTES": 2**20,
                       "MAX_BATCH_IMAGES": 10}.items():
        monkeypatch.setenv(key, str(value))
    app = create_app({"TESTING": True})
    archive = zip_bytes({f"{i}.bmp": b"\0" * 390_000 for i in range(4)})
    assert len(archive) < 20_000
    response = post_batch(app.test_client(), archive=(archive, "thin-bomb.zip"))
    assert_json_error(response, 413, "inflates")
    assert_nothing_stored(app, env)


def test_a_file_pillow_knows_but_we_do_not_take_is_refused_without_parsing(client, app, env):
    dds = b"DDS " + (124).to_bytes(4, "little") + b"\0" * 120  # a header no plugin of ours reads
    assert_json_error(post_image(client, dds, "texture.dds"), 415, "not an image")
    assert_nothing_stored(app, env)


def test_an_orientation_tag_that_is_not_a_number_leaves_the_photo_as_it_is(client, app, env):
    # One IFD entry, big-endian: tag 0x0112, type 2 (ASCII), count 2, value "6\0".
    exif = (b"Exif\0\0" + b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHI", 0x0112, 2, 2) + b"6\0\0\0" + struct.pack(">I", 0))
    data = photo_bytes("square", 5, size=(200, 100), exif=exif)
    assert Image.open(io.BytesIO(data)).getexif().get(0x0112) == "6"
    response = post_image(client, data)
    assert response.status_code == 202, response.json
    assert (response.json["width"], response.json["height"]) == (200, 100)


def test_long_polls_past_the_waiting_limit_answer_at_once(client, app, env):
    from frontend import predictions

    created = post_image(client, photo_bytes()).json
    taken = [predictions._waiters.acquire(blocking=False) for _ in range(predictions.MAX_WAITERS)]
    try:
        assert all(taken)
        started = time.monotonic()
        body = client.get(created["url"] + "?wait=5").json
        assert time.monotonic() - started < 1
        assert body["status"] == "queued"
    finally:
        for _ in taken:
            predictions._waiters.release()
