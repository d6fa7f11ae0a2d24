"""Security headers on every response (frontend/security.py), pages that keep to
the Content-Security-Policy, and the public answers that must not say what runs
behind the site: /api/models while Serving is down, /healthz while the database
and Redis are.

The pages are rendered by the real app on both databases and read with an HTML
parser; tests/test_browser.py shows Chromium enforcing the same policy.
"""

from __future__ import annotations

import io
import logging
from html.parser import HTMLParser

import pytest

from core.db import utcnow
from frontend.security import HSTS
from tests.factories import add_prediction, image_bytes
from tests.web_fixtures import csrf_token

POLICY = {
    "default-src": "'self'", "script-src": "'self'", "style-src": "'self'",
    "img-src": "'self' data: blob:", "object-src": "'none'", "base-uri": "'none'",
    "form-action": "'self'", "frame-ancestors": "'none'",
}
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "X-Frame-Options": "DENY", "Cross-Origin-Opener-Policy": "same-origin"}


def assert_secured(response, *, production: bool = False) -> None:
    csp = dict(part.strip().split(" ", 1)
               for part in response.headers["Content-Security-Policy"].split(";"))
    assert csp == POLICY, csp
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers.get(name))
    assert ("Strict-Transport-Security" in response.headers) is production


@pytest.fixture
def admin(app, admin_user):
    client = app.test_client()
    name, password = admin_user
    client.post("/admin/login", data={"username": name, "password": password,
                                      "csrf_token": csrf_token(client, "/admin/login")})
    return client


def test_pages_the_api_static_files_and_errors_carry_the_headers(app, client, db, store):
    prediction = add_prediction(db, store, 1, finished_at=utcnow())
    responses = {
        "page": client.get("/"),
        "result page": client.get(f"/p/{prediction}"),
        "image": client.get(f"/images/{prediction}"),
        "api": client.get(f"/api/predictions/{prediction}"),
        "openapi": client.get("/api/openapi.json"),
        "static": client.get("/static/style.css"),
        "healthz": client.get("/healthz"),
        "404 page": client.get("/no-such-page"),
        "404 api": client.get("/api/predictions/nope"),
        "405": client.delete("/api/predictions"),
        "400 form": client.post("/admin/login", data={}),
        "302 to login": client.get("/admin/"),
        "401 api": client.get("/admin/api/stats"),
    }
    expected = {"404 page": 404, "404 api": 404, "405": 405, "400 form": 400,
                "302 to login": 302, "401 api": 401}
    for what, response in responses.items():
        assert response.status_code == expected.get(what, 200), (what, response.status_code)
        assert_secured(response)


def test_a_413_and_a_500_carry_the_headers(env, monkeypatch):
    from frontend import create_app

    monkeypatch.setenv("MAX_REQUEST_BYTES", "20000")
    app = create_app({"TESTING": True, "PROPAGATE_EXCEPTIONS": False})

    @app.get("/boom")
    def boom():
        raise RuntimeError("a bug")

    @app.get("/own-policy")
    def own_policy():
        return "", 204, {"Referrer-Policy": "no-referrer"}

    try:
        client = app.test_client()
        too_big = client.post("/api/predictions", data={"image": (
            io.BytesIO(image_bytes(0) * 50), "a.jpg")})
        assert too_big.status_code == 413
        assert_secured(too_big)
        page = client.get("/boom")
        assert page.status_code == 500
        assert "a bug" not in page.get_data(as_text=True)
        assert_secured(page)
        kept = client.get("/own-policy")  # a route's own value wins over the default
        assert kept.headers["Referrer-Policy"] == "no-referrer"
        assert kept.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        app.extensions["classifier"].db.dispose()
        app.extensions["classifier"].redis.close()


def test_a_429_carries_the_headers(client, admin_user):
    token = csrf_token(client, "/admin/login")
    statuses = [client.post("/admin/login", data={"username": "x", "password": "y",
                                                  "csrf_token": token}) for _ in range(11)]
    assert statuses[-1].status_code == 429
    assert_secured(statuses[-1])


def test_hsts_is_sent_in_production_only(env, monkeypatch, client):
    from frontend import create_app

    assert_secured(client.get("/"), production=False)
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "q8Zr2LwT5nVb0XcY7mKd3HsJ9pFgA6eUoRiN1tQ4yWx_-")
    app = create_app({"TESTING": True})
    try:
        response = app.test_client().get("/api/predictions/nope")
        assert_secured(response, production=True)
        assert response.headers["Strict-Transport-Security"] == HSTS
    finally:
        app.extensions["classifier"].db.dispose()
        app.extensions["classifier"].redis.close()


class InlineCode(HTMLParser):
    """What a strict CSP blocks in a page: inline scripts, inline event handlers,
    style attributes and elements, javascript: URLs."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        values = dict(attrs)
        if tag == "script" and not values.get("src"):
            self.found.append("an inline <script>")
        if tag == "style":
            self.found.append("a <style> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"an inline handler {name}= on <{tag}>")
            if name == "style":
                self.found.append(f"a style attribute on <{tag}>")
            if value and value.strip().lower().startswith("javascript:"):
                self.found.append(f"a javascript: URL in <{tag} {name}>")


def test_every_page_keeps_to_the_content_security_policy(app, client, admin, db, store,
                                                         admin_user):
    done = add_prediction(db, store, 1, finished_at=utcnow())
    queued = add_prediction(db, store, 2, status="queued")
    batch = client.post("/upload", data={"csrf_token": csrf_token(client, "/"), "images": [
        (io.BytesIO(image_bytes(3)), "a.jpg"),
        (io.BytesIO(image_bytes(4)), "b.jpg")]})
    assert batch.status_code == 303, batch.get_data(as_text=True)[:300]
    pages = {"/": client, f"/p/{done}": client, f"/p/{queued}": client,
             batch.headers["Location"]: client, "/history": client, "/admin/login": client,
             "/no-such-page": client}
    for path in ["/admin/", f"/admin/records/{done}", "/admin/review", "/admin/stats",
                 "/admin/models", "/admin/sessions", "/admin/password"]:
        pages[path] = admin
    for path, visitor in pages.items():
        response = visitor.get(path)
        assert response.status_code in (200, 404), (path, response.status_code)
        parser = InlineCode()
        parser.feed(response.get_data(as_text=True))
        assert "html" in parser.tags, path
        assert not parser.found, (path, parser.found)


def test_the_parser_finds_what_the_policy_blocks():
    parser = InlineCode()
    parser.feed('<p style="x" onclick="y"><script>1</script><a href=" JavaScript:go()">'
                '<style>p{}</style><script src="/static/a.js"></script>')
    assert len(parser.found) == 5, parser.found


# --- what anonymous callers are told ----------------------------------------------------------


def test_models_api_tells_an_anonymous_caller_only_that_serving_is_unavailable(
        client, env, caplog):
    with caplog.at_level(logging.WARNING):
        response = client.get("/api/models")
    assert response.status_code == 503
    assert response.json == {"error": "the model server is unavailable"}
    body = response.get_data(as_text=True)
    assert "127.0.0.1" not in body and env["SERVING_URL"] not in body
    assert env["SERVING_URL"] in caplog.text  # the details are in the log


def test_models_api_tells_a_logged_in_administrator_why(admin, env):
    response = admin.get("/api/models")
    assert response.status_code == 503
    assert env["SERVING_URL"] in response.json["error"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_healthz_says_what_is_unavailable_but_names_no_driver_or_error(env, monkeypatch,
                                                                       caplog):
    from frontend import create_app

    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    app = create_app({"TESTING": True})
    try:
        with caplog.at_level(logging.WARNING):
            response = app.test_client().get("/healthz")
        assert response.status_code == 503
        assert response.json == {"status": "degraded", "database": "unavailable",
                                 "redis": "unavailable"}
        assert "OperationalError" in caplog.text and "ConnectionError" in caplog.text
    finally:
        app.extensions["classifier"].db.dispose()
        app.extensions["classifier"].redis.close()


def test_healthz_answers_ok_when_both_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok", "redis": "ok"}
