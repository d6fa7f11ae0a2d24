"""Logging administrators in and out, and changing one's password.

Login attempts are limited twice (Flask-Limiter, counted in Redis). Per user
name (case-folded, stripped: "Admin " and "admin" are one name), from any
address: guessing one account's password from many addresses gets no further
than from one. Per address, more loosely: one client cannot try many names
fast, yet an attacker behind a shared proxy address spends their own target
name's budget long before the address's, so the others behind that proxy
still log in. Every attempt counts, right or wrong: counting only failures
would let parallel guesses through before the first failure is counted.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from core.db import User
from frontend import queries
from frontend.admin import bp, sessions
from frontend.extensions import Admin, limiter
from frontend.forms import LoginForm, LogoutForm, PasswordForm
from frontend.services import services

#: Attempts on one user name, from every address together: 720 guesses a day at
#: most, against passwords of 10 characters or more.
NAME_LIMIT = "10 per minute;30 per hour"
#: Attempts from one address, on any names: 3 times a name's budget, for a proxy
#: or an office that several administrators share.
ADDRESS_LIMIT = "30 per minute;150 per hour"
#: Tries of the current password on the change-password form, per administrator.
PASSWORD_LIMIT = "5 per minute;20 per hour"


def login_name() -> str:
    """The limiter's key for the user name a login form sends: normalised, and
    hashed so that any text makes a short key."""
    name = (request.form.get("username") or "").strip().casefold()
    return "name:" + hashlib.sha256(name.encode()).hexdigest()[:32]


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(ADDRESS_LIMIT, methods=["POST"],
               error_message="too many login attempts from your address; "
                             "wait a minute and try again")
@limiter.limit(NAME_LIMIT, methods=["POST"], key_func=login_name,
               error_message="too many login attempts for this user name; "
                             "wait a few minutes and try again")
def login():
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("admin/login.html", form=form), 400 if form.is_submitted() else 200
    with services().db.session() as db:
        user = queries.authenticate(db, form.username.data, form.password.data)
        admin = _start_session(db, user) if user else None
        if admin and current_user.is_authenticated and current_user.session_token:
            sessions.end(db, current_user.session_token)  # this browser's previous one
    if admin is None:
        form.password.errors.append("wrong user name or password")
        return render_template("admin/login.html", form=form), 401
    session.clear()  # a fresh session: no fixation
    login_user(admin)
    target = request.args.get("next", "")
    return redirect(target if _local(target) else url_for("admin.records"), 303)


@bp.post("/logout")
def logout():
    if not LogoutForm().validate_on_submit():
        abort(400, "the logout form expired; reload the page")
    if current_user.session_token:
        with services().db.session() as db:
            sessions.end(db, current_user.session_token)
    logout_user()
    session.clear()
    return redirect(url_for("admin.login"), 303)


def password_owner() -> str:
    """The limiter's key for the change-password form: the administrator, or the
    address of an anonymous caller (whom the login redirect answers anyway)."""
    if current_user.is_authenticated:
        return f"user:{current_user.user_id}"
    return f"address:{request.remote_addr}"


@bp.route("/password", methods=["GET", "POST"])
@limiter.limit(PASSWORD_LIMIT, methods=["POST"], key_func=password_owner,
               error_message="too many tries; wait a few minutes and try again")
def change_password():
    """A new password ends every session of the administrator, this one included,
    and this browser goes on in a fresh one."""
    form = PasswordForm()
    if not form.validate_on_submit():
        return render_template("admin/password.html", form=form), \
            400 if form.is_submitted() else 200
    with services().db.session() as db:
        user = db.get(User, current_user.user_id)
        if not check_password_hash(user.password_hash, form.current.data):
            form.current.errors.append("that is not your current password")
            return render_template("admin/password.html", form=form), 401
        ended = set_password(db, user, form.new.data)
        admin = _start_session(db, user)
    login_user(admin)
    flash(f"password changed; {ended} session{'s' if ended != 1 else ''} ended, "
          f"this browser stays logged in")
    return redirect(url_for("admin.sessions"), 303)


def set_password(db: Session, user: User, password: str) -> int:
    """Stores a new password for `user` and ends every session of theirs; returns
    how many were open. The caller has checked the password's length."""
    user.password_hash = generate_password_hash(password)
    return sessions.end_all(db, user.id)


def _start_session(db: Session, user: User) -> Admin:
    token = sessions.start(db, user, address=request.remote_addr,
                           user_agent=request.user_agent.string)
    return Admin(user, token)


def _local(target: str) -> bool:
    """A path on this site: browsers read "/\\evil.com" as "//evil.com", so no backslashes."""
    if not target.startswith("/") or "\\" in target or not target.isprintable():
        return False
    parts = urlsplit(target)
    return not target.startswith("//") and not parts.scheme and not parts.netloc
