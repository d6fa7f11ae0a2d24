"""Logging administrators in and out; login attempts are rate-limited per address."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import abort, redirect, render_template, request, session, url_for
from flask_login import login_user, logout_user

from frontend import queries
from frontend.admin import bp
from frontend.extensions import Admin, limiter
from frontend.forms import LoginForm, LogoutForm
from frontend.services import services

#: Every attempt counts, right or wrong: counting only failures would let
#: parallel guesses through before the first failure is counted.
LOGIN_LIMIT = "10 per minute;50 per hour"


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(LOGIN_LIMIT, methods=["POST"],
               error_message="too many login attempts; wait a minute and try again")
def login():
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("admin/login.html", form=form), 400 if form.is_submitted() else 200
    with services().db.session() as db:
        user = queries.authenticate(db, form.username.data, form.password.data)
    if user is None:
        form.password.errors.append("wrong user name or password")
        return render_template("admin/login.html", form=form), 401
    session.clear()  # a fresh session: no fixation
    login_user(Admin(user))
    target = request.args.get("next", "")
    return redirect(target if _local(target) else url_for("admin.records"), 303)


@bp.post("/logout")
def logout():
    if not LogoutForm().validate_on_submit():
        abort(400, "the logout form expired; reload the page")
    logout_user()
    session.clear()
    return redirect(url_for("admin.login"), 303)


def _local(target: str) -> bool:
    """A path on this site: browsers read "/\\evil.com" as "//evil.com", so no backslashes."""
    if not target.startswith("/") or "\\" in target or not target.isprintable():
        return False
    parts = urlsplit(target)
    return not target.startswith("//") and not parts.scheme and not parts.netloc
