"""Administrators' sessions end when they are ended: a cookie copied before a
logout, a remember-me cookie, the other browsers after "log out everywhere" or
a password change are refused from then on (frontend/admin/sessions.py).

The attacks replay real cookies: copied from one Flask test client to another
on both databases, and once against gunicorn with `requests`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import requests
from flask_login.utils import encode_cookie
from sqlalchemy import select, update

from core.db import AdminSession, User, utcnow
from core.settings import ROOT
from tests.factories import add_admin, admin_sessions, gunicorn
from tests.web_fixtures import CSRF, csrf_token


def log_in(app, name: str, password: str, *, address: str = "127.0.0.1",
           agent: str = "test browser"):
    """A fresh test client, logged in as `name` from `address` with `agent`."""
    client = app.test_client()
    client.environ_base.update(REMOTE_ADDR=address, HTTP_USER_AGENT=agent)
    token = csrf_token(client, "/admin/login")
    response = client.post("/admin/login", data={"username": name, "password": password,
                                                 "csrf_token": token})
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    return client


def copy_of(app, client, cookie: str = "session"):
    """Another client (same address and browser) holding a copy of `client`'s cookie."""
    thief = app.test_client()
    thief.environ_base.update(client.environ_base)
    thief.set_cookie(cookie, client.get_cookie(cookie).value)
    return thief


def admitted(client) -> bool:
    """Whether the back office lets this client in: a page and the admin API agree."""
    page = client.get("/admin/")
    api = client.get("/admin/api/stats")
    if page.status_code == 200 and api.status_code == 200:
        return True
    assert page.status_code == 302 and urlsplit(page.headers["Location"]).path == \
        "/admin/login", page.status_code
    assert api.status_code == 401, api.status_code
    return False


def post_form(client, path: str, page: str, **data):
    return client.post(path, data={"csrf_token": csrf_token(client, page), **data})


def session_token(app, client) -> str:
    """The session token inside the client's signed cookie."""
    serializer = app.session_interface.get_signing_serializer(app)
    return serializer.loads(client.get_cookie("session").value)["_user_id"]


def test_a_cookie_copied_before_logout_is_refused_after_it(app, admin_user, db):
    owner = log_in(app, *admin_user)
    thief = copy_of(app, owner)
    assert admitted(thief)  # the copy works while the session is open
    response = post_form(owner, "/admin/logout", "/admin/")
    assert response.status_code == 303
    assert not admitted(owner)
    assert not admitted(thief)
    [row] = admin_sessions(db, admin_user[0])
    assert row.ended_at is not None


def test_log_out_everywhere_ends_every_session_of_the_user_and_no_one_elses(app, admin_user, db):
    name, password = admin_user
    add_admin(db, "bob", "bob's own long password")
    desk = log_in(app, name, password, agent="desk")
    laptop = log_in(app, name, password, address="10.5.0.2", agent="laptop")
    bob = log_in(app, "bob", "bob's own long password")
    stolen = copy_of(app, laptop)
    response = post_form(desk, "/admin/sessions/end-all", "/admin/sessions")
    assert response.status_code == 303
    assert urlsplit(response.headers["Location"]).path == "/admin/login"
    assert "logged out everywhere (2 sessions ended)" in desk.get("/admin/login").get_data(
        as_text=True)
    for client in (desk, laptop, stolen):
        assert not admitted(client)
    assert admitted(bob)
    assert all(row.ended_at for row in admin_sessions(db, name))
    assert not any(row.ended_at for row in admin_sessions(db, "bob"))


def test_log_out_everywhere_needs_the_forms_csrf_token(app, admin_user):
    desk = log_in(app, *admin_user)
    assert desk.post("/admin/sessions/end-all").status_code == 400
    assert desk.post("/admin/sessions/end-all", data={"csrf_token": "forged"}).status_code == 400
    assert admitted(desk)


def test_create_admin_reset_ends_the_administrators_sessions(app, admin_user, db):
    name, _ = admin_user
    clients = [log_in(app, *admin_user), log_in(app, *admin_user, agent="another")]
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "frontend", "create-admin", name, "--reset"],
        cwd=ROOT, env=os.environ | {"ADMIN_PASSWORD": "a brand new password"},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"administrator {name} updated; 2 open sessions ended" in result.stdout
    for client in clients:
        assert not admitted(client)
    assert admitted(log_in(app, name, "a brand new password"))


def test_an_ended_session_cannot_be_revived_by_a_remember_cookie(app, admin_user):
    """The site sets no remember-me cookie, but one signed with the site's key (as a
    stolen key or a future "remember me" would make) carries a session token too."""
    owner = log_in(app, *admin_user)
    with app.test_request_context():
        remember = encode_cookie(session_token(app, owner))  # signed as Flask-Login signs it

    def with_remember_cookie() -> int:
        # One request each: Flask-Login's strong session protection drops a session
        # loaded from a remember cookie on its next request anyway.
        client = app.test_client()
        client.set_cookie("remember_token", remember)
        return client.get("/admin/api/stats").status_code

    assert with_remember_cookie() == 200  # while the session is open, the cookie logs in
    post_form(owner, "/admin/logout", "/admin/")
    assert with_remember_cookie() == 401


def test_a_cookie_naming_a_user_id_logs_nobody_in(app, admin_user, db):
    """The cookie a session held before sessions were kept on the server (the
    user's id), signed with the right key: no session row, no administrator."""
    serializer = app.session_interface.get_signing_serializer(app)
    with db.session() as reading:
        user_id = reading.scalar(select(User.id).where(User.username == admin_user[0]))
    forged = app.test_client()
    forged.set_cookie("session", serializer.dumps({"_user_id": str(user_id), "_fresh": True}))
    assert not admitted(forged)


def test_the_sessions_page_lists_open_sessions_and_ends_another_one(app, admin_user):
    name, password = admin_user
    desk = log_in(app, name, password, address="10.6.0.1", agent="Desk Browser/1.0")
    phone = log_in(app, name, password, address="10.6.0.2", agent="Phone Browser/2.0")
    page = desk.get("/admin/sessions")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    for shown in ("10.6.0.1", "10.6.0.2", "Desk Browser/1.0", "Phone Browser/2.0",
                  "this browser", "Log out everywhere"):
        assert shown in text, shown
    [(other_id,)] = [(int(part.split("/")[0]),) for part in
                     text.split('action="/admin/sessions/')[1:] if part[0].isdigit()]
    response = post_form(desk, f"/admin/sessions/{other_id}/end", "/admin/sessions")
    assert response.status_code == 303
    assert not admitted(phone)
    assert admitted(desk)
    again = post_form(desk, f"/admin/sessions/{other_id}/end", "/admin/sessions")
    assert again.status_code == 404


def test_no_one_can_end_another_administrators_session(app, admin_user, db):
    add_admin(db, "bob", "bob's own long password")
    bob = log_in(app, "bob", "bob's own long password")
    mine = log_in(app, *admin_user)
    [bobs] = admin_sessions(db, "bob")
    response = post_form(mine, f"/admin/sessions/{bobs.id}/end", "/admin/sessions")
    assert response.status_code == 404
    assert admitted(bob)


def test_a_password_change_ends_the_other_sessions_and_keeps_this_browser(app, admin_user, db):
    name, password = admin_user
    desk = log_in(app, name, password)
    laptop = log_in(app, name, password, agent="laptop")
    new = "a long new password"
    response = post_form(desk, "/admin/password", "/admin/password",
                         current=password, new=new, again=new)
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    assert not admitted(laptop)
    assert admitted(desk)
    rows = admin_sessions(db, name)
    assert [row.ended_at is None for row in rows] == [False, False, True]
    anyone = app.test_client()
    token = csrf_token(anyone, "/admin/login")
    assert anyone.post("/admin/login", data={"username": name, "password": password,
                                             "csrf_token": token}).status_code == 401
    assert admitted(log_in(app, name, new))


@pytest.mark.parametrize("fields, status, message", [
    ({"current": "not it", "new": "a long new password", "again": "a long new password"},
     401, "not your current password"),
    ({"new": "a long new password", "again": "another long password"}, 400, "differ"),
    ({"new": "short", "again": "short"}, 400, "at least 10 characters"),
    ({"new": "", "again": ""}, 400, "This field is required"),
], ids=["wrong-current", "mismatch", "short", "empty"])
def test_a_bad_password_change_is_refused_and_changes_nothing(app, admin_user, fields, status,
                                                              message):
    name, password = admin_user
    desk = log_in(app, name, password)
    laptop = log_in(app, name, password, agent="laptop")
    response = post_form(desk, "/admin/password", "/admin/password",
                         **({"current": password} | fields))
    assert response.status_code == status
    assert message in response.get_data(as_text=True)
    assert admitted(desk) and admitted(laptop)
    assert admitted(log_in(app, name, password))


def test_a_password_change_without_the_csrf_token_is_refused(app, admin_user):
    name, password = admin_user
    desk = log_in(app, name, password)
    response = desk.post("/admin/password", data={"current": password,
                                                  "new": "a long new password",
                                                  "again": "a long new password"})
    assert response.status_code == 400
    assert admitted(log_in(app, name, password))


def test_logging_in_again_ends_the_browsers_previous_session(app, admin_user, db):
    client = log_in(app, *admin_user)
    stolen = copy_of(app, client)
    token = csrf_token(client, "/admin/login")
    name, password = admin_user
    again = client.post("/admin/login", data={"username": name, "password": password,
                                              "csrf_token": token})
    assert again.status_code == 303
    assert admitted(client)
    assert not admitted(stolen)
    assert [row.ended_at is None for row in admin_sessions(db, name)] == [False, True]


def test_guessing_the_current_password_on_the_change_form_is_limited(app, admin_user):
    """A borrowed, unlocked browser cannot try passwords on the form at will."""
    name, password = admin_user
    desk = log_in(app, name, password)
    new = "a long new password"
    for i in range(5):
        response = post_form(desk, "/admin/password", "/admin/password",
                             current=f"guess {i}", new=new, again=new)
        assert response.status_code == 401, i
    response = post_form(desk, "/admin/password", "/admin/password",
                         current=password, new=new, again=new)
    assert response.status_code == 429
    assert "too many tries" in response.get_data(as_text=True)
    assert admitted(log_in(app, name, password))  # unchanged


def test_last_seen_is_written_at_most_once_a_minute(app, admin_user, db):
    client = log_in(app, *admin_user)
    [row] = admin_sessions(db, admin_user[0])
    for _ in range(3):
        assert client.get("/admin/").status_code == 200
    [same] = admin_sessions(db, admin_user[0])
    assert same.last_seen_at == row.last_seen_at
    earlier = utcnow() - timedelta(minutes=2)
    with db.session() as writing:
        writing.execute(update(AdminSession).values(last_seen_at=earlier))
    assert client.get("/admin/").status_code == 200
    [seen] = admin_sessions(db, admin_user[0])
    assert seen.last_seen_at > earlier + timedelta(minutes=1)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_gunicorn_refuses_a_cookie_copied_before_logout(env, admin_user, tmp_path):
    name, password = admin_user
    with gunicorn(tmp_path) as url:
        owner = requests.Session()
        page = owner.get(f"{url}/admin/login", timeout=10)
        token = CSRF.search(page.text).group(1)
        logged = owner.post(f"{url}/admin/login", data={
            "username": name, "password": password, "csrf_token": token},
            allow_redirects=False, timeout=10)
        assert logged.status_code == 303, logged.text[:500]
        thief = requests.Session()
        thief.cookies.update(owner.cookies)
        assert thief.get(f"{url}/admin/api/stats", timeout=10).status_code == 200

        token = CSRF.search(owner.get(f"{url}/admin/", timeout=10).text).group(1)
        out = owner.post(f"{url}/admin/logout", data={"csrf_token": token},
                         allow_redirects=False, timeout=10)
        assert out.status_code == 303
        assert thief.get(f"{url}/admin/api/stats", timeout=10).status_code == 401
        page = thief.get(f"{url}/admin/stats", allow_redirects=False, timeout=10)
        assert page.status_code == 302
        assert urlsplit(page.headers["Location"]).path == "/admin/login"
