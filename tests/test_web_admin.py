"""The admin back office: login, CSRF, rate limits, records, review, statistics,
models and the administrator commands.

Records are written straight into the database with their image in the store,
so no model, Serving or worker is needed; Redis (the rate limiter, the queue
figures) and both databases are the real ones of `tests/web_fixtures.py`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from core.db import Database, Status, User
from core.settings import DEV_SECRET_KEY, ROOT, Settings, SettingsError
from core.storage import ImageStore
from tests.factories import add_admin, add_prediction, image_bytes, stored_prediction
from tests.web_fixtures import csrf_token

WRONG_LOGIN = "wrong user name or password"
#: The timestamps of the `sample` records: one day each, 2026-03-01 to 2026-03-04.
MARCH = datetime(2026, 3, 1, 10, 0)


@pytest.fixture
def add_record(db: Database, store: ImageStore) -> Callable[..., str]:
    """Adds one Prediction (done, "apple" at 0.9, on MARCH 1st by default) with a stored
    JPEG, image_bytes(seed); returns its id."""

    def add(seed: int = 0, **fields) -> str:
        return add_prediction(db, store, seed, **({"created_at": MARCH} | fields))

    return add


@pytest.fixture
def sample(add_record: Callable[..., str]) -> dict[str, str]:
    """Five records, one of each kind the filters tell apart: name -> id.

    ========  ======  =======  ====  ===  ======  ==========  ==========
    name      status  label    conf  ver  source  day         review
    ========  ======  =======  ====  ===  ======  ==========  ==========
    a         done    apple    0.95  1    page    2026-03-01  right
    b         done    banana   0.55  2    api     2026-03-02  wrong: cherry
    c         done    apple    0.30  2    batch   2026-03-03  none
    d         failed  -        -     -    api     2026-03-03  none
    e         queued  -        -     -    page    2026-03-04  none
    ========  ======  =======  ====  ===  ======  ==========  ==========
    """
    reviewed = {"reviewed_at": MARCH + timedelta(days=5), "reviewed_by": "someone"}
    return {
        "a": add_record(1, filename="a.jpg", confidence=0.95, model_version=1, source="page",
                        created_at=MARCH, serving_ms=10.0, correct=True, true_label="apple",
                        **reviewed),
        "b": add_record(2, filename="b.jpg", label="banana", confidence=0.55, model_version=2,
                        source="api", created_at=MARCH + timedelta(days=1), serving_ms=20.0,
                        correct=False, true_label="cherry", **reviewed),
        "c": add_record(3, filename="c.jpg", confidence=0.30, model_version=2, source="batch",
                        created_at=MARCH + timedelta(days=2), serving_ms=30.0),
        "d": add_record(4, filename="d.jpg", status=Status.FAILED, source="api",
                        error="Serving said no", created_at=MARCH + timedelta(days=2, hours=1)),
        "e": add_record(5, filename="e.jpg", status=Status.QUEUED, source="page",
                        created_at=MARCH + timedelta(days=3)),
    }


def login(client, username: str, password: str, **kwargs):
    token = csrf_token(client, "/admin/login")
    return client.post("/admin/login", data={"username": username, "password": password,
                                             "csrf_token": token}, **kwargs)


def logged_in(client) -> bool:
    response = client.get("/admin/api/stats")
    assert response.status_code in (200, 401), response.status_code
    return response.status_code == 200


def redirects_to_login(response, path: str) -> bool:
    if response.status_code != 302:
        return False
    location = urlsplit(response.headers["Location"])
    return (location.path == "/admin/login"
            and parse_qs(location.query)["next"][0].startswith(path))


def names(response) -> set[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return {r["filename"].removesuffix(".jpg") for r in response.json["records"]}


# --- Anonymous visitors ---------------------------------------------------------------------


def test_admin_pages_redirect_an_anonymous_user_to_the_login(client, add_record):
    prediction_id = add_record()
    for path in ["/admin/", "/admin/records.csv", f"/admin/records/{prediction_id}",
                 "/admin/review/export.zip", "/admin/stats", "/admin/models",
                 "/admin/models/1/metrics.json"]:
        response = client.get(path)
        assert redirects_to_login(response, path), (path, response.status_code,
                                                    response.headers.get("Location"))
    assert client.get("/admin/login").status_code == 200


def test_the_admin_api_answers_an_anonymous_user_401_json(client):
    for path in ["/admin/api/stats", "/admin/api/records"]:
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.is_json
        assert "log in" in response.json["error"]


def test_an_anonymous_review_is_refused_and_changes_nothing(client, add_record, db):
    prediction_id = add_record()
    path = f"/admin/records/{prediction_id}/review"
    without_token = client.post(path, data={"verdict": "wrong", "true_label": "pear"})
    assert without_token.status_code == 400
    token = csrf_token(client, "/admin/login")  # an anonymous session has a token too
    with_token = client.post(path, data={"verdict": "wrong", "true_label": "pear",
                                         "csrf_token": token})
    assert redirects_to_login(with_token, path)
    p = stored_prediction(db, prediction_id)
    assert (p.correct, p.true_label, p.reviewed_at, p.reviewed_by) == (None, None, None, None)


# --- Logging in -----------------------------------------------------------------------------


def test_a_wrong_password_is_refused_and_logs_nobody_in(client, admin_user):
    name, _ = admin_user
    response = login(client, name, "not the password")
    assert response.status_code == 401
    assert WRONG_LOGIN in response.get_data(as_text=True)
    assert not logged_in(client)
    assert redirects_to_login(client.get("/admin/"), "/admin/")


def test_an_unknown_user_name_is_refused_like_a_wrong_password(client, admin_user):
    _, password = admin_user
    response = login(client, "nobody", password)
    assert response.status_code == 401
    assert WRONG_LOGIN in response.get_data(as_text=True)
    assert not logged_in(client)
    assert redirects_to_login(client.get("/admin/stats"), "/admin/stats")


def test_the_right_password_logs_in_and_follows_a_local_next(client, admin_user, db):
    response = login(client, *admin_user, query_string={"next": "/admin/stats?x=1"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/stats?x=1"
    assert logged_in(client)
    with db.session() as session:
        user = session.scalar(select(User).where(User.username == admin_user[0]))
        assert user.last_login_at is not None


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/",
                                    "/\\evil.example/", "javascript:alert(1)"])
def test_login_does_not_redirect_to_another_site(client, admin_user, target):
    response = login(client, *admin_user, query_string={"next": target})
    assert response.status_code == 303
    location = urlsplit(response.headers["Location"])
    assert not location.netloc and not location.scheme
    assert location.path.startswith("/") and not location.path.startswith(("//", "/\\"))


# --- CSRF -----------------------------------------------------------------------------------


def test_a_login_without_a_csrf_token_is_refused(client, admin_user):
    name, password = admin_user
    client.get("/admin/login")
    response = client.post("/admin/login", data={"username": name, "password": password})
    assert response.status_code == 400
    assert "reload the page" in response.get_data(as_text=True)
    assert not logged_in(client)


def test_a_review_without_a_csrf_token_is_refused_and_stores_nothing(admin_client, add_record,
                                                                     db):
    prediction_id = add_record()
    response = admin_client.post(f"/admin/records/{prediction_id}/review",
                                 data={"verdict": "right"})
    assert response.status_code == 400
    assert stored_prediction(db, prediction_id).correct is None
    wrong_token = admin_client.post(f"/admin/records/{prediction_id}/review",
                                    data={"verdict": "right", "csrf_token": "forged"})
    assert wrong_token.status_code == 400
    assert stored_prediction(db, prediction_id).reviewed_at is None


def test_a_logout_without_a_csrf_token_keeps_the_session(admin_client):
    response = admin_client.post("/admin/logout")
    assert response.status_code == 400
    assert logged_in(admin_client)
    assert admin_client.get("/admin/").status_code == 200


# --- Rate limiting --------------------------------------------------------------------------


def test_the_eleventh_login_attempt_in_a_minute_is_refused_with_429_even_with_the_right_password(
        client, admin_user):
    name, password = admin_user
    for _ in range(10):
        assert login(client, name, "guess").status_code == 401
    response = login(client, name, password)
    assert response.status_code == 429
    assert "too many login attempts" in response.get_data(as_text=True)
    assert not logged_in(client)


def from_address(app, address: str):
    """A fresh test client whose requests come from `address`."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_rotating_addresses_cannot_guess_one_user_names_password(app, admin_user):
    """The per-name limit counts across addresses, and "Admin " is "admin"."""
    name, password = admin_user
    spellings = [name, name.upper(), f" {name} ", name.capitalize()]
    for i in range(10):
        guessing = from_address(app, f"10.1.{i}.{i + 1}")
        assert login(guessing, spellings[i % 4], f"guess {i}").status_code == 401, i
    fresh = from_address(app, "10.2.0.1")
    response = login(fresh, name, password)
    assert response.status_code == 429
    assert "too many login attempts for this user name" in response.get_data(as_text=True)
    assert not logged_in(fresh)


def test_an_attacker_on_a_shared_address_does_not_lock_out_the_others_behind_it(
        app, admin_user, db):
    """One attacker spends the name they attack, not the proxy's address."""
    name, _ = admin_user
    add_admin(db, "bob", "bob's own long password")
    attacker = from_address(app, "10.3.0.1")
    for i in range(10):
        assert login(attacker, name, f"guess {i}").status_code == 401, i
    for i in range(5):  # the attacker goes on, refused
        assert login(attacker, name, f"more {i}").status_code == 429, i
    colleague = from_address(app, "10.3.0.1")
    assert login(colleague, "bob", "bob's own long password").status_code == 303
    assert logged_in(colleague)


def test_the_per_address_limit_counts_every_name_from_one_address(app, admin_user):
    name, password = admin_user
    spraying = from_address(app, "10.4.0.1")
    for i in range(30):  # 30 names, 1 guess each: no name's limit is reached
        assert login(spraying, f"user{i}", "password123").status_code == 401, i
    response = login(spraying, name, password)
    assert response.status_code == 429
    assert "too many login attempts from your address" in response.get_data(as_text=True)
    elsewhere = from_address(app, "10.9.8.7")  # the session is bound to the address, too
    assert login(elsewhere, name, password).status_code == 303
    assert logged_in(elsewhere)


def test_successful_logins_count_too_so_parallel_guesses_cannot_slip_through(client, admin_user):
    name, password = admin_user
    for attempt in range(6):
        assert login(client, name, password).status_code == 303, attempt
    for _ in range(4):
        assert login(client, name, "guess").status_code == 401
    assert login(client, name, password).status_code == 429


# --- Records --------------------------------------------------------------------------------


def test_the_records_page_lists_records_with_thumbnails_answering_jpeg(admin_client, sample):
    page = admin_client.get("/admin/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "5 match" in html
    for name, prediction_id in sample.items():
        assert f'alt="{name}.jpg"' in html
        thumbnail_url = f"/images/{prediction_id}/thumbnail"
        assert thumbnail_url in html
        thumbnail = admin_client.get(thumbnail_url)
        assert thumbnail.status_code == 200
        assert thumbnail.mimetype == "image/jpeg"
        with Image.open(io.BytesIO(thumbnail.data)) as image:
            assert image.format == "JPEG"
            assert image.size == (64, 48)  # smaller than the 160x160 box: kept as is
    # newest first
    assert html.index('alt="e.jpg"') < html.index('alt="c.jpg"') < html.index('alt="a.jpg"')


@pytest.mark.parametrize(("query", "expected"), [
    ({}, "abcde"),
    ({"label": "apple"}, "ac"),
    ({"label": "kiwi"}, ""),
    ({"status": "done"}, "abc"),
    ({"status": "failed"}, "d"),
    ({"status": "queued"}, "e"),
    ({"model_version": "2"}, "bc"),
    ({"model_version": "1"}, "a"),
    ({"source": "api"}, "bd"),
    ({"source": "batch"}, "c"),
    ({"date_from": "2026-03-03"}, "cde"),
    ({"date_to": "2026-03-02"}, "ab"),
    ({"date_from": "2026-03-02", "date_to": "2026-03-03"}, "bcd"),
    ({"below": "0.6"}, "bc"),
    ({"below": "0.3"}, ""),
    ({"reviewed": "yes"}, "ab"),
    ({"reviewed": "no"}, "cde"),
    ({"reviewed": "right"}, "a"),
    ({"reviewed": "wrong"}, "b"),
    ({"label": "apple", "below": "0.5"}, "c"),
    ({"source": "api", "status": "done", "reviewed": "wrong"}, "b"),
])
def test_record_filters_select_the_matching_rows(admin_client, sample, query, expected):
    assert names(admin_client.get("/admin/api/records", query_string=query)) == set(expected)
    page = admin_client.get("/admin/", query_string=query)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f"{len(expected)} match" in html
    shown = {name for name in "abcde" if f'alt="{name}.jpg"' in html}
    assert shown == set(expected)


@pytest.mark.parametrize("query", [
    {"status": "bogus"}, {"source": "web"}, {"reviewed": "maybe"},
    {"model_version": "x"}, {"model_version": "-1"}, {"model_version": "1.5"},
    {"model_version": str(2**64)}, {"below": "1.5"}, {"below": "-0.1"}, {"below": "abc"},
    {"below": "nan"}, {"date_from": "2026-13-01"}, {"date_to": "yesterday"},
    {"date_from": "2026-02-30"},
])
def test_bad_filter_values_answer_400(admin_client, sample, query):
    name = next(iter(query))
    page = admin_client.get("/admin/", query_string=query)
    assert page.status_code == 400
    assert name in page.get_data(as_text=True)
    assert admin_client.get("/admin/records.csv", query_string=query).status_code == 400
    api = admin_client.get("/admin/api/records", query_string=query)
    assert api.status_code == 400
    assert name in api.json["error"]


def test_a_model_version_beyond_32_bits_matches_nothing(admin_client, sample):
    """TF Serving's versions are int64; so are the filter and the column."""
    response = admin_client.get("/admin/api/records", query_string={"model_version": 2**40})
    assert names(response) == set()
    assert admin_client.get("/admin/", query_string={"model_version": 2**40}).status_code == 200


def test_records_come_50_to_a_page(admin_client, add_record):
    oldest = MARCH
    for i in range(55):
        add_record(0, filename=f"p{i:02d}.jpg", created_at=oldest + timedelta(minutes=i))
    first = admin_client.get("/admin/api/records").json
    assert (first["total"], first["page"], first["page_size"]) == (55, 1, 50)
    assert len(first["records"]) == 50
    second = admin_client.get("/admin/api/records?page=2").json
    # newest first: page 2 holds the five oldest
    assert [r["filename"] for r in second["records"]] == [f"p{i:02d}.jpg"
                                                          for i in range(4, -1, -1)]
    assert not {r["id"] for r in first["records"]} & {r["id"] for r in second["records"]}
    html = admin_client.get("/admin/?page=2").get_data(as_text=True)
    assert "Page 2 of 2" in html
    assert html.count('class="thumb"') == 5
    assert 'rel="prev"' in html and 'rel="next"' not in html
    first_html = admin_client.get("/admin/").get_data(as_text=True)
    assert first_html.count('class="thumb"') == 50
    assert "Page 1 of 2" in first_html and 'rel="next"' in first_html


@pytest.mark.parametrize("page", ["0", "x", "-1", "1.5", ""])
def test_bad_page_numbers_answer_400(admin_client, sample, page):
    assert admin_client.get("/admin/", query_string={"page": page}).status_code == 400
    response = admin_client.get("/admin/api/records", query_string={"page": page})
    assert response.status_code == 400
    assert "page" in response.json["error"]


@pytest.mark.parametrize("page", ["²", str(10**20)])
def test_page_numbers_int_cannot_read_or_the_database_cannot_hold_answer_400(admin_client,
                                                                             sample, page):
    assert admin_client.get("/admin/", query_string={"page": page}).status_code == 400
    assert admin_client.get("/admin/api/records",
                            query_string={"page": page}).status_code == 400


def test_the_csv_export_honours_the_filters(admin_client, sample):
    response = admin_client.get("/admin/records.csv", query_string={"label": "apple"})
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["filename"] for r in rows] == ["c.jpg", "a.jpg"]
    a = rows[1]
    assert a["id"] == sample["a"]
    assert (a["status"], a["label"], a["confidence"], a["model_version"], a["source"]) == (
        "done", "apple", "0.9500", "1", "page")
    assert (a["correct"], a["true_label"]) == ("True", "apple")
    assert a["created_at"].startswith("2026-03-01T10:00")
    everything = admin_client.get("/admin/records.csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(everything)))
    assert {r["filename"] for r in rows} == {f"{n}.jpg" for n in "abcde"}
    failed = next(r for r in rows if r["filename"] == "d.jpg")
    assert (failed["status"], failed["label"], failed["error"]) == ("failed", "", "Serving said no")
    wrong = admin_client.get("/admin/records.csv?reviewed=wrong&source=api").get_data(as_text=True)
    assert [r["filename"] for r in csv.DictReader(io.StringIO(wrong))] == ["b.jpg"]


def test_the_record_page_shows_the_record(admin_client, add_record):
    prediction_id = add_record(7, filename="<b>fruit</b>.jpg", confidence=0.875,
                               model_version=4, source="api")
    response = admin_client.get(f"/admin/records/{prediction_id}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "&lt;b&gt;fruit&lt;/b&gt;.jpg" in html and "<b>fruit</b>" not in html
    assert f"/images/{prediction_id}" in html
    assert "apple 87.5%, pear 12.5%" in html
    assert "<dd>4</dd>" in html and "<dd>api</dd>" in html
    assert "2026-03-01 10:00:00" in html
    assert 'id="review"' in html and 'name="csrf_token"' in html
    image = admin_client.get(f"/images/{prediction_id}")
    assert image.status_code == 200 and image.data == image_bytes(7)
    assert admin_client.get("/admin/records/nosuchrecord").status_code == 404


# --- Review ---------------------------------------------------------------------------------


def review(client, prediction_id: str, **data):
    token = csrf_token(client, f"/admin/records/{prediction_id}")
    return client.post(f"/admin/records/{prediction_id}/review",
                       data={"csrf_token": token, **data})


def test_marking_a_record_right_stores_its_label_as_the_truth(admin_client, add_record, db):
    prediction_id = add_record(label="banana")
    response = review(admin_client, prediction_id, verdict="right", true_label="ignored")
    assert response.status_code == 303
    assert response.headers["Location"] == f"/admin/records/{prediction_id}"
    p = stored_prediction(db, prediction_id)
    assert (p.correct, p.true_label, p.reviewed_by) == (True, "banana", "admin")
    assert p.reviewed_at is not None
    page = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "marked right: banana" in page
    assert "right, true label banana, by admin" in page


@pytest.mark.parametrize("true_label", [None, "", "   "])
def test_marking_a_record_wrong_without_a_true_label_is_refused(admin_client, add_record, db,
                                                               true_label):
    prediction_id = add_record()
    data = {"verdict": "wrong"} | ({} if true_label is None else {"true_label": true_label})
    response = review(admin_client, prediction_id, **data)
    assert response.status_code == 400
    assert "say what the image really shows" in response.get_data(as_text=True)
    p = stored_prediction(db, prediction_id)
    assert (p.correct, p.true_label, p.reviewed_at, p.reviewed_by) == (None, None, None, None)


def test_marking_a_record_wrong_stores_the_true_label_and_the_reviewer(admin_client, add_record,
                                                                       db):
    prediction_id = add_record()
    response = review(admin_client, prediction_id, verdict="wrong", true_label="  cherry ")
    assert response.status_code == 303
    p = stored_prediction(db, prediction_id)
    assert (p.correct, p.true_label, p.reviewed_by) == (False, "cherry", "admin")
    assert p.label == "apple"
    assert "marked wrong: cherry" in admin_client.get(
        f"/admin/records/{prediction_id}").get_data(as_text=True)
    # A second opinion replaces the first.
    assert review(admin_client, prediction_id, verdict="right").status_code == 303
    p = stored_prediction(db, prediction_id)
    assert (p.correct, p.true_label) == (True, "apple")


def test_a_review_needs_a_verdict_and_a_labelled_record(admin_client, add_record, db):
    done = add_record()
    assert review(admin_client, done, true_label="pear").status_code == 400
    assert review(admin_client, done, verdict="maybe").status_code == 400
    assert stored_prediction(db, done).correct is None
    failed = add_record(1, status=Status.FAILED, error="broken")
    response = review(admin_client, failed, verdict="right")
    assert response.status_code == 409
    assert stored_prediction(db, failed).correct is None
    token = csrf_token(admin_client, f"/admin/records/{done}")
    missing = admin_client.post("/admin/records/nosuchrecord/review",
                                data={"csrf_token": token, "verdict": "right"})
    assert missing.status_code == 404


def test_the_review_export_holds_reviewed_images_by_true_label(admin_client, sample, db):
    response = admin_client.get("/admin/review/export.zip")
    assert response.status_code == 200
    assert response.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    a, b = stored_prediction(db, sample["a"]), stored_prediction(db, sample["b"])
    assert entries == {
        f"dataset/apple/{a.image_sha256[:16]}.jpg": image_bytes(1),
        f"dataset/cherry/{b.image_sha256[:16]}.jpg": image_bytes(2),
    }


def test_the_review_export_answers_404_when_nothing_is_reviewed(admin_client, add_record):
    response = admin_client.get("/admin/review/export.zip")
    assert response.status_code == 404
    assert "no reviewed images yet" in response.get_data(as_text=True)
    add_record()  # a record, but not reviewed
    assert admin_client.get("/admin/review/export.zip").status_code == 404


# --- Statistics -----------------------------------------------------------------------------


def retry(client, path: str, form_page: str):
    return client.post(path, data={"csrf_token": csrf_token(client, form_page)})


def queued_job_ids(env: dict[str, str]) -> list[str]:
    from redis import Redis

    return [job.decode() for job in Redis.from_url(env["REDIS_URL"]).lrange("rq:queue:predictions",
                                                                           0, -1)]


def test_retrying_a_failed_record_queues_it_again_with_a_fresh_budget(admin_client, add_record,
                                                                      db, env):
    pid = add_record(status=Status.FAILED, attempts=6, error="the model server did not answer")
    page = admin_client.get(f"/admin/records/{pid}").get_data(as_text=True)
    assert 'id="retry"' in page
    response = retry(admin_client, f"/admin/records/{pid}/retry", f"/admin/records/{pid}")
    assert response.status_code == 303
    p = stored_prediction(db, pid)
    assert (p.status, p.error, p.attempts, p.finished_at) == (Status.QUEUED, None, 0, None)
    assert queued_job_ids(env) == [p.job_id] == [f"predict-{pid}"]
    assert "queued again" in admin_client.get(f"/admin/records/{pid}").get_data(as_text=True)


@pytest.mark.parametrize("status", [Status.DONE, Status.QUEUED, Status.RUNNING])
def test_only_failed_records_can_be_retried(admin_client, add_record, db, env, status):
    pid = add_record(status=status)
    response = retry(admin_client, f"/admin/records/{pid}/retry", "/admin/")
    assert response.status_code == 409
    assert stored_prediction(db, pid).status == status
    assert queued_job_ids(env) == []


def test_a_retry_without_a_csrf_token_is_refused(admin_client, add_record, db):
    pid = add_record(status=Status.FAILED, error="lost")
    assert admin_client.post(f"/admin/records/{pid}/retry").status_code == 400
    assert stored_prediction(db, pid).status == Status.FAILED


def test_an_anonymous_retry_is_refused(client, add_record, db):
    pid = add_record(status=Status.FAILED, error="lost")
    path = f"/admin/records/{pid}/retry"
    assert client.post(path).status_code == 400
    token = csrf_token(client, "/admin/login")  # an anonymous session has a token too
    assert redirects_to_login(client.post(path, data={"csrf_token": token}), path)
    assert stored_prediction(db, pid).status == Status.FAILED


def test_retry_failed_queues_the_failed_records_the_filters_select(admin_client, add_record,
                                                                   db, env):
    pages = [add_record(seed=i, status=Status.FAILED, error="lost") for i in range(3)]
    api = add_record(seed=9, status=Status.FAILED, error="lost", source="api")
    done = add_record(seed=10)
    listing = admin_client.get("/admin/?source=page").get_data(as_text=True)
    assert "Retry 3 failed" in listing
    response = retry(admin_client, "/admin/records/retry-failed?source=page", "/admin/")
    assert response.status_code == 303
    assert {stored_prediction(db, p).status for p in pages} == {Status.QUEUED}
    assert stored_prediction(db, api).status == Status.FAILED
    assert stored_prediction(db, done).status == Status.DONE
    assert "3 failed records queued again" in admin_client.get(
        response.headers["Location"]).get_data(as_text=True)
    assert len(queued_job_ids(env)) == 1  # one job for the chunk


def test_retry_failed_under_another_status_filter_retries_nothing(admin_client, add_record,
                                                                   db, env):
    failed = add_record(status=Status.FAILED, error="lost")
    assert "Retry" not in admin_client.get("/admin/?status=done").get_data(as_text=True)
    response = retry(admin_client, "/admin/records/retry-failed?status=done", "/admin/")
    assert response.status_code == 303 and "status=done" in response.headers["Location"]
    assert stored_prediction(db, failed).status == Status.FAILED
    assert queued_job_ids(env) == []


def test_a_retry_while_redis_is_down_leaves_the_record_queued_for_the_sweeper(
        admin_client, add_record, db, monkeypatch, app):
    pid = add_record(status=Status.FAILED, error="lost")
    token = csrf_token(admin_client, f"/admin/records/{pid}")
    from redis import Redis
    services = app.extensions["classifier"]
    monkeypatch.setattr(services, "queue", type(services.queue)(
        "predictions", connection=Redis(port=9, socket_connect_timeout=0.5)))
    response = admin_client.post(f"/admin/records/{pid}/retry", data={"csrf_token": token})
    assert response.status_code == 303
    assert stored_prediction(db, pid).status == Status.QUEUED


def test_the_stats_api_counts_the_records(admin_client, sample):
    response = admin_client.get("/admin/api/stats")
    assert response.status_code == 200
    s = response.json
    assert s["total"] == 5
    assert s["statuses"] == {"queued": 1, "running": 0, "done": 3, "failed": 1}
    assert s["sources"] == {"page": 2, "api": 2, "batch": 1}
    assert s["per_class"] == [{"label": "apple", "count": 2}, {"label": "banana", "count": 1}]
    assert s["per_day"] == [{"day": "2026-03-01", "count": 1}, {"day": "2026-03-02", "count": 1},
                            {"day": "2026-03-03", "count": 2}, {"day": "2026-03-04", "count": 1}]
    histogram = s["confidence_histogram"]
    assert [h["range"] for h in histogram][:2] == ["0.0-0.1", "0.1-0.2"]
    assert histogram[-1]["range"] == "0.9-1.0"
    assert [h["count"] for h in histogram] == [0, 0, 0, 1, 0, 1, 0, 0, 0, 1]
    assert s["accuracy_by_version"] == [
        {"model_version": 1, "reviewed": 1, "right": 1, "accuracy": 1.0},
        {"model_version": 2, "reviewed": 1, "right": 0, "accuracy": 0.0},
    ]
    assert s["mean_serving_ms"] == pytest.approx(20.0)
    assert s["queue"] == {"queued": 0, "running": 0, "scheduled": 0, "failed": 0,
                          "workers": [], "error": None}


def test_accuracy_by_version_follows_the_reviews(admin_client, add_record):
    for seed, correct in enumerate([True, True, False, None]):
        add_record(seed, model_version=3, correct=correct,
                   true_label=None if correct is None else "apple" if correct else "pear")
    add_record(9, model_version=4, confidence=1.0)
    s = admin_client.get("/admin/api/stats").json
    assert s["accuracy_by_version"] == [
        {"model_version": 3, "reviewed": 3, "right": 2, "accuracy": pytest.approx(2 / 3)}]
    assert s["confidence_histogram"][-1]["count"] == 5  # 0.9 four times and 1.0
    assert s["per_class"] == [{"label": "apple", "count": 5}]


def test_the_stats_of_an_empty_database_are_zeros(admin_client):
    s = admin_client.get("/admin/api/stats").json
    assert s["total"] == 0
    assert s["per_class"] == s["per_day"] == s["accuracy_by_version"] == []
    assert sum(h["count"] for h in s["confidence_histogram"]) == 0
    assert s["mean_serving_ms"] is None
    assert admin_client.get("/admin/stats").status_code == 200


def test_the_stats_page_draws_svg_charts_and_the_queue(admin_client, sample):
    response = admin_client.get("/admin/stats")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.count("<svg") == 4
    assert 'aria-label="Predictions per class"' in html
    assert "v1 (1 reviewed)" in html and "100.0%" in html
    assert "5 predictions: 1 queued, 0 running, 3 done, 1 failed" in html
    assert 'id="queue"' in html
    assert ("0 waiting, 0 running, 0 waiting to retry, 0 failed jobs; 0 live worker(s)"
            in " ".join(html.split()))
    assert "Serving took 20 ms" in html


def test_the_queue_figures_come_from_redis(admin_client):
    queue = admin_client.application.extensions["classifier"].queue
    for _ in range(2):
        queue.enqueue("worker.jobs.no_such_job")  # never run: no worker in this test
    assert admin_client.get("/admin/api/stats").json["queue"]["queued"] == 2
    assert "2 waiting, 0 running" in admin_client.get("/admin/stats").get_data(as_text=True)


# --- Models ---------------------------------------------------------------------------------

METRICS = {
    "test": {"accuracy": 0.9, "loss": 0.3, "per_class": {
        "apple": {"precision": 0.95, "recall": 0.85, "f1": 0.897, "support": 6},
        "pear": {"precision": 0.8, "recall": 0.9, "f1": 0.847, "support": 4},
    }},
    "created_at": "2026-03-01T10:00:00+00:00",
    "data": {"images": 10},
    "artifacts": {"saved_model": {"bytes": 3 * 1048576}},
}


def write_report(env: dict[str, str], version: int | str, text: str) -> Path:
    folder = Path(env["MODEL_BASE_PATH"]) / env["MODEL_NAME"] / "reports" / str(version)
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(text)
    return folder


def test_the_models_page_says_when_serving_is_unreachable(admin_client, env):
    response = admin_client.get("/admin/models")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert f"Serving at {env['SERVING_URL']} did not answer" in html
    assert "cannot reach" in html
    assert "Version " not in html


def test_the_models_page_shows_a_versions_report(admin_client, env):
    write_report(env, 3, json.dumps(METRICS))
    write_report(env, 5, "{not json")  # a broken report is skipped, not a 500
    write_report(env, "latest", json.dumps(METRICS))  # not a version folder
    response = admin_client.get("/admin/models")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "did not answer" in html
    assert "<h2>Version 3</h2>" in html
    assert "Version 5" not in html and "latest" not in html
    assert "not served" in html
    for text in ["90.0%", "2026-03-01T10:00:00+00:00", "<td>10</td>", "3.0 MB",
                 "<td>apple</td><td>0.950</td><td>0.850</td><td>0.897</td><td>6</td>",
                 "/admin/models/3/metrics.json"]:
        assert text in html, text


def test_a_versions_metrics_json_is_served(admin_client, env):
    write_report(env, 3, json.dumps(METRICS))
    response = admin_client.get("/admin/models/3/metrics.json")
    assert response.status_code == 200
    assert response.json == METRICS


@pytest.mark.parametrize("path", ["/admin/models/3/other.txt", "/admin/models/3/curves.png",
                                  "/admin/models/4/metrics.json", "/admin/models/3/..%2Fx"])
def test_only_existing_report_files_are_served(admin_client, env, path):
    folder = write_report(env, 3, json.dumps(METRICS))
    (folder / "other.txt").write_text("secret")
    assert admin_client.get(path).status_code == 404


# --- Administrators on the command line -----------------------------------------------------


def users(db: Database) -> dict[str, str]:
    with db.session() as session:
        return {u.username: u.password_hash for u in session.scalars(select(User))}


def test_create_admin_runs_under_flasks_test_runner_without_an_app_context(runner, db):
    result = runner.invoke(args=["create-admin", "bob"],
                           env={"ADMIN_PASSWORD": "a long enough password"})
    assert result.exit_code == 0, repr(result.exception)
    assert list(users(db)) == ["bob"]


def test_the_flask_command_creates_an_administrator(env, client, db):
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "frontend", "create-admin", "carol"],
        cwd=ROOT, env=os.environ | {"ADMIN_PASSWORD": "carol's long password"},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "administrator carol created" in result.stdout
    assert check_password_hash(users(db)["carol"], "carol's long password")
    assert login(client, "carol", "carol's long password").status_code == 303


def test_create_admin_stores_a_hashed_password(app, runner, client, db):
    password = "a long enough password"
    result = runner.invoke(args=["create-admin", "bob"], env={"ADMIN_PASSWORD": password})
    assert result.exit_code == 0, result.output
    assert "administrator bob created" in result.output
    stored_hash = users(db)["bob"]
    assert password not in stored_hash
    assert check_password_hash(stored_hash, password)
    assert login(client, "bob", password).status_code == 303


@pytest.mark.parametrize("password", ["short", "123456789"])
def test_create_admin_refuses_a_short_password(app, runner, db, password):
    result = runner.invoke(args=["create-admin", "bob"], env={"ADMIN_PASSWORD": password})
    assert result.exit_code != 0
    assert "at least 10 characters" in result.output
    assert users(db) == {}


def test_create_admin_refuses_an_existing_name_unless_reset(app, runner, client, db):
    first, second = "the first password", "the second password"
    created = runner.invoke(args=["create-admin", "bob"], env={"ADMIN_PASSWORD": first})
    assert created.exit_code == 0, created.output
    again = runner.invoke(args=["create-admin", "bob"], env={"ADMIN_PASSWORD": second})
    assert again.exit_code != 0
    assert "exists already" in again.output
    assert check_password_hash(users(db)["bob"], first)
    reset = runner.invoke(args=["create-admin", "bob", "--reset"], env={"ADMIN_PASSWORD": second})
    assert reset.exit_code == 0, reset.output
    assert "administrator bob updated" in reset.output
    assert list(users(db)) == ["bob"]
    assert check_password_hash(users(db)["bob"], second)
    assert not check_password_hash(users(db)["bob"], first)
    assert login(client, "bob", first).status_code == 401
    assert login(client, "bob", second).status_code == 303


def test_there_is_no_default_administrator(client, db):
    assert users(db) == {}
    for name, password in [("admin", "admin"), ("admin", "password"), ("root", "root")]:
        response = login(client, name, password)
        assert response.status_code == 401
        assert WRONG_LOGIN in response.get_data(as_text=True)
    assert not logged_in(client)


def test_db_upgrade_makes_the_first_administrator_only_when_there_is_none(runner, client, db):
    plain = runner.invoke(args=["db", "upgrade"],
                          env={"ADMIN_USERNAME": None, "ADMIN_PASSWORD": None})
    assert plain.exit_code == 0, plain.output
    assert "database at revision" in plain.output
    assert users(db) == {}
    first = runner.invoke(args=["db", "upgrade"],
                          env={"ADMIN_USERNAME": "root", "ADMIN_PASSWORD": "first admin secret"})
    assert first.exit_code == 0, first.output
    assert list(users(db)) == ["root"]
    assert check_password_hash(users(db)["root"], "first admin secret")
    again = runner.invoke(args=["db", "upgrade"],
                          env={"ADMIN_USERNAME": "other", "ADMIN_PASSWORD": "other admin secret"})
    assert again.exit_code == 0, again.output
    assert list(users(db)) == ["root"]
    same_name = runner.invoke(args=["db", "upgrade"],
                              env={"ADMIN_USERNAME": "root", "ADMIN_PASSWORD": "a new secret!"})
    assert same_name.exit_code == 0, same_name.output
    assert check_password_hash(users(db)["root"], "first admin secret")
    assert login(client, "root", "first admin secret").status_code == 303
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1


# --- Logging out ----------------------------------------------------------------------------


def test_logout_ends_the_session(admin_client):
    assert admin_client.get("/admin/").status_code == 200
    token = csrf_token(admin_client, "/admin/")
    response = admin_client.post("/admin/logout", data={"csrf_token": token})
    assert response.status_code == 303
    assert urlsplit(response.headers["Location"]).path == "/admin/login"
    assert redirects_to_login(admin_client.get("/admin/"), "/admin/")
    assert redirects_to_login(admin_client.get("/admin/stats"), "/admin/stats")
    assert admin_client.get("/admin/api/records").status_code == 401


# --- Production settings --------------------------------------------------------------------


@pytest.mark.parametrize("secret", [None, "", "too short", "x" * 31, DEV_SECRET_KEY])
def test_production_refuses_a_missing_or_short_secret_key(monkeypatch, secret):
    monkeypatch.setenv("APP_ENV", "production")
    if secret is None:
        monkeypatch.delenv("SECRET_KEY", raising=False)
    else:
        monkeypatch.setenv("SECRET_KEY", secret)
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        Settings.from_env()


def test_production_with_a_long_secret_key_sets_secure_cookies(env, monkeypatch):
    from frontend import create_app

    secret = "kV3nq8ZpY2rT0wLxB7mH5sJdF9gC4aQeU1oRtN6yWi_-"
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", secret)
    settings = Settings.from_env()
    assert settings.production and settings.secret_key == secret
    app = create_app()
    try:
        assert app.config["SECRET_KEY"] == secret
        assert app.config["SESSION_COOKIE_SECURE"] is True
        assert app.config["REMEMBER_COOKIE_SECURE"] is True
        response = app.test_client().get("/admin/login")
        cookie = next(c for c in response.headers.getlist("Set-Cookie")
                      if c.startswith("session="))
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    finally:
        app.extensions["classifier"].db.dispose()
        app.extensions["classifier"].redis.close()


def test_development_cookies_are_not_secure_only(app):
    assert app.config["SESSION_COOKIE_SECURE"] is False
