"""Flask extensions, made once and bound to each app in `init_app`."""

from __future__ import annotations

from flask import Flask, g, jsonify, redirect, request, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, UserMixin
from flask_wtf.csrf import CSRFProtect

from core.db import User

csrf = CSRFProtect()
login_manager = LoginManager()
#: Sliding windows: a refused request fills none, so an upload over the quota
#: costs nothing and the next smaller one may still pass (frontend/quotas.py).
limiter = Limiter(key_func=get_remote_address, strategy="sliding-window-counter")


class Admin(UserMixin):
    """The logged-in administrator, as Flask-Login sees one. Its id, which the
    session cookie carries, is the token of its server-side session (None when a
    bearer token authenticated the request): frontend/admin/sessions.py."""

    def __init__(self, user: User, session_token: str | None = None):
        self.user_id = user.id
        self.username = user.username
        self.session_token = session_token

    def get_id(self) -> str | None:
        return self.session_token


def init_app(app: Flask) -> None:
    from frontend import quotas
    quotas.init_app(app)  # first: its hook bounds the body that the CSRF check reads
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.session_protection = "strong"
    # Programs post to the JSON API without a browser session, so no CSRF token:
    # it answers JSON and sets no cookie an attacker's page could ride on.
    from frontend import api
    csrf.exempt(api.bp)


@login_manager.user_loader
def load_user(token: str) -> Admin | None:
    """The cookie's (or a remember-me cookie's) session token: an administrator only
    while that session is open."""
    from frontend.admin import sessions
    from frontend.services import services
    with services().db.session() as db:
        found = sessions.live(db, token)
        return Admin(found.user, token) if found else None


@login_manager.request_loader
def load_user_from_token(req) -> Admin | None:
    """Scripts send `Authorization: Bearer <token>` to /admin/api/ (frontend/tokens.py).

    Flask-Login asks this only when the session holds no administrator, so a
    browser's request is always a session's, and keeps its CSRF check; a
    request authenticated here is marked `g.by_token`, which frees it from
    the CSRF token (frontend/admin/api.py): no other site can make a browser
    send this header.
    """
    from frontend import tokens
    from frontend.services import services
    header = req.headers.get("Authorization")
    if header is None or not req.path.startswith("/admin/api/"):
        return None
    with services().db.session() as session:
        user = tokens.authenticate(session, header)
        admin = Admin(user) if user else None
    if admin is None:
        g.token_refused = True
        return None
    g.by_token = True
    return admin


@login_manager.unauthorized_handler
def unauthorized():
    if request.path.startswith("/admin/api/"):
        if g.get("token_refused"):
            return jsonify(error="the API token is unknown or revoked; "
                                 "make one with flask create-token NAME"), 401
        return jsonify(error="log in as an administrator first"), 401
    return redirect(url_for("admin.login", next=request.full_path))
