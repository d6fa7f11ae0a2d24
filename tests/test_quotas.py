"""Upload quotas, attacked as a client that sends too much would: per address,
per API key, and per request (frontend/quotas.py).

The counts live in the test's real Redis (flushed around each test); the
addresses are set per request through the WSGI environment (REMOTE_ADDR), as
gunicorn sets them. The limits are small (QUOTAS) so a few requests cross them.
"""

from __future__ import annotations

import hashlib
import html
import re

import pytest
from sqlalchemy import func, select

from core.db import ApiKey, Prediction
from tests.factories import add_api_key, image_bytes, part, zip_bytes
from tests.web_fixtures import csrf_token

QUOTAS = {"UPLOAD_REQUESTS_PER_MINUTE": "50", "ANON_IMAGES_PER_MINUTE": "5",
          "ANON_IMAGES_PER_HOUR": "100", "ANON_MAX_BATCH_IMAGES": "5",
          "ANON_MAX_REQUEST_BYTES": "104858", "MAX_BATCH_IMAGES": "20",
          "MAX_REQUEST_BYTES": "2000000"}
ALERT = re.compile(r'<p class="error" role="alert" id="upload-error">(.*?)</p>', re.S)
A, B = "203.0.113.7", "198.51.100.9"


@pytest.fixture
def env(env, monkeypatch):
    for name, value in QUOTAS.items():
        monkeypatch.setenv(name, value)
    return env | QUOTAS


def send(client, route: str, images: int, address: str = A, key: str | None = None,
         seed: int = 0, archive: int = 0):
    """`images` loose images (and a .zip of `archive` more) to a route, from an address."""
    files = [part(image_bytes(seed + i), f"{seed + i}.jpg") for i in range(images)]
    zipped = zip_bytes({f"z{i}.jpg": image_bytes(500 + seed + i) for i in range(archive)})
    headers = {"X-API-Key": key} if key else {}
    environ = {"REMOTE_ADDR": address}
    if route == "api-single":
        return client.post("/api/predictions", data={"image": files[0]}, headers=headers,
                           environ_base=environ)
    form: dict = {"images": files}
    if archive:
        form["archive"] = part(zipped, "photos.zip")
    if route == "api-batch":
        return client.post("/api/batches", data=form, headers=headers, environ_base=environ)
    form["csrf_token"] = csrf_token(client, "/")
    return client.post("/upload", data=form, environ_base=environ)


def accepted(response) -> bool:
    return response.status_code in (202, 303)


def message(response) -> str:
    if response.is_json:
        assert list(response.json) == ["error"], response.json
        return response.json["error"]
    body = response.get_data(as_text=True)
    assert "Traceback" not in body
    assert 'id="upload"' in body, "a page refusal shows the upload form again"
    return html.unescape(" ".join(ALERT.findall(body)))


def records(app) -> int:
    with app.extensions["classifier"].db.session() as session:
        return session.scalar(select(func.count()).select_from(Prediction))


@pytest.mark.parametrize("route", ["api-single", "api-batch", "page-single", "page-batch"])
def test_an_address_over_its_image_quota_gets_429_with_retry_after_while_another_is_served(
        client, app, route):
    per_request = 1 if route.endswith("single") else 2
    answers = [send(client, route, per_request, seed=10 * i) for i in range(5 // per_request)]
    assert all(accepted(r) for r in answers), [r.status_code for r in answers]
    stored = records(app)
    refused = send(client, route, per_request, seed=90)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 120  # a sliding minute
    words = message(refused)
    assert "too many images from this address" in words and "5 images per minute" in words
    assert "try again in" in words
    assert records(app) == stored, "a refused upload stores nothing"
    assert accepted(send(client, route, per_request, address=B, seed=95))


def test_a_batch_costs_its_image_count_zips_included(client):
    assert send(client, "api-batch", 2, archive=2).status_code == 202  # 4 of 5
    over = send(client, "api-batch", 2, seed=20)
    assert over.status_code == 429, "2 more would make 6"
    assert send(client, "api-single", 1, seed=30).status_code == 202, "1 more makes 5"
    assert send(client, "api-single", 1, seed=31).status_code == 429
    # Another address: a zip of 5 alone spends the minute's quota.
    assert send(client, "api-batch", 0, address=B, archive=5).status_code == 202
    assert send(client, "api-single", 1, address=B, seed=40).status_code == 429


def test_requests_past_the_requests_per_minute_are_refused_even_when_they_carry_nothing(
        client):
    for _ in range(50):
        assert client.post("/api/batches", data={},
                           environ_base={"REMOTE_ADDR": A}).status_code == 400
    refused = client.post("/api/batches", data={}, environ_base={"REMOTE_ADDR": A})
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert "too many uploads from this address: at most 50 per minute" in message(refused)


def test_an_api_key_has_its_own_quota_apart_from_its_address_and_other_keys(client, db):
    key = add_api_key(db, "scanner", per_hour=7)
    other = add_api_key(db, "other", per_hour=7)
    assert accepted(send(client, "api-batch", 5))  # the address's minute is spent
    assert send(client, "api-single", 1, seed=1).status_code == 429
    # From that same address, the key still sends: 7 an hour, whatever the address.
    assert send(client, "api-batch", 6, key=key, seed=10).status_code == 202
    assert send(client, "api-single", 1, key=key, seed=20).status_code == 202
    refused = send(client, "api-single", 1, key=key, address=B, seed=21)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 60
    assert "this API key has used its quota of 7 images per hour" in message(refused)
    assert send(client, "api-single", 1, key=other, seed=22).status_code == 202
    assert send(client, "api-single", 1, address=B, seed=23).status_code == 202


def test_an_unknown_or_revoked_key_is_refused_with_401_never_served_as_anonymous(
        client, app, db, runner):
    key = add_api_key(db, "gone")
    assert runner.invoke(args=["create-api-key", "gone", "--revoke"]).exit_code == 0
    for sent in (key, "not-a-key", ""):
        for route in ("api-single", "api-batch"):
            response = client.post("/api/predictions" if route == "api-single" else
                                   "/api/batches", headers={"X-API-Key": sent},
                                   data={"image": part(image_bytes(), "a.jpg"),
                                         "images": [part(image_bytes(1), "b.jpg")]})
            assert response.status_code == 401, (sent, route, response.json)
            assert "API key (X-API-Key) is unknown or revoked" in response.json["error"]
        assert client.get("/api/batches/x", headers={"X-API-Key": sent}).status_code == 401
    assert records(app) == 0


@pytest.mark.parametrize("route", ["api-batch", "page-batch"])
def test_an_anonymous_request_over_the_per_request_limits_gets_413_with_the_reason(
        client, app, route):
    too_many = send(client, route, 6)
    assert too_many.status_code == 413
    assert "6 files; a batch holds at most 5" in message(too_many)
    zipped = send(client, route, 3, archive=3, address=B)
    assert zipped.status_code == 413 and "6 files" in message(zipped)
    form = {"images": [part(b"\xff\xd8" + bytes(150_000), "big.jpg")]}
    if route == "page-batch":
        form["csrf_token"] = csrf_token(client, "/")
    big = client.post("/api/batches" if route == "api-batch" else "/upload", data=form)
    assert big.status_code == 413
    assert "an upload without an API key is limited to 0.1 MB and 5 files" in message(big)
    hint = "with an API key (X-API-Key)" if route == "api-batch" else "programs with an API key"
    assert all(hint in message(r) for r in (too_many, big))
    assert records(app) == 0


def test_an_api_key_gets_the_full_per_request_limits(client, db, app):
    key = add_api_key(db)
    batch = send(client, "api-batch", 8, key=key, archive=4)
    assert batch.status_code == 202, batch.json
    assert batch.json["total"] == 12
    big = client.post("/api/predictions", headers={"X-API-Key": key},
                      data={"image": part(image_bytes(7, "PNG", (200, 200)) + bytes(150_000),
                                          "big.png")})
    assert big.status_code == 202, big.json  # over the anonymous 0.1 MB
    over = send(client, "api-batch", 21, key=key)
    assert over.status_code == 413 and over.json["error"] == "21 files; a batch holds at most 20"


def test_create_api_key_prints_a_key_that_works_and_revoke_ends_it(runner, client, db):
    made = runner.invoke(args=["create-api-key", "nightly-job", "--per-hour", "3",
                               "--per-day", "4"])
    assert made.exit_code == 0, made.output
    assert "3 images an hour and 4 a day" in made.output
    key = made.output.strip().splitlines()[-1]
    with db.session() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.name == "nightly-job"))
        assert row.key_sha256 == hashlib.sha256(key.encode()).hexdigest()
        assert (row.images_per_hour, row.images_per_day, row.last_used_at) == (3, 4, None)
    assert send(client, "api-batch", 3, key=key).status_code == 202
    assert send(client, "api-single", 1, key=key, seed=9).status_code == 429
    with db.session() as session:
        assert session.scalar(select(ApiKey.last_used_at)) is not None
    again = runner.invoke(args=["create-api-key", "nightly-job"])
    assert again.exit_code != 0 and "there is a key named 'nightly-job' already" in again.output
    revoked = runner.invoke(args=["create-api-key", "nightly-job", "--revoke"])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert send(client, "api-single", 1, key=key, seed=10).status_code == 401
    twice = runner.invoke(args=["create-api-key", "nightly-job", "--revoke"])
    assert twice.exit_code != 0 and "no live key named 'nightly-job'" in twice.output


def test_with_redis_down_uploads_still_work_and_the_quota_still_holds(monkeypatch, env):
    """The limiter counts in memory while Redis is away; uploads wait for the sweep.
    Memory's sliding windows are aligned to the clock, so right after a minute
    begins they may let one more through (the previous minute's count weighs a
    little less): the quota holds within one image."""
    from frontend import create_app

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    app = create_app({"TESTING": True})
    client = app.test_client()
    try:
        answers = [send(client, "api-single", 1, seed=i) for i in range(7)]
        codes = [r.status_code for r in answers]
        assert codes[:5] == [202] * 5, codes
        assert all(r.json["status"] == "queued" for r in answers[:5])
        assert 429 in codes[5:], codes
        refused = answers[codes.index(429)]
        assert "Retry-After" in refused.headers and "too many images" in message(refused)
        assert send(client, "api-single", 1, address=B, seed=10).status_code == 202
    finally:
        app.extensions["classifier"].db.dispose()
