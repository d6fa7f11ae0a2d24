"""Administrators' sessions, kept on the server so that they can be ended.

The signed cookie holds a random token in place of the user's id (Admin.get_id,
frontend/extensions.py); the database keeps only its SHA-256, one AdminSession
row per login. Every request looks the row up (the user_loader), so a session
ends the moment its row does: its cookie, any copy of it and a remember-me
cookie made from it are refused from then on. Logging out ends this row; "Log
out everywhere", the change-password form and `create-admin --reset` end every
row of the user. API tokens for /admin/api/ are another matter (frontend/tokens.py).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask import abort, flash, redirect, render_template, session, url_for
from flask_login import current_user, logout_user
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db import AdminSession, User, utcnow
from frontend.admin import bp
from frontend.forms import SessionsForm
from frontend.services import services

#: A session's last_seen_at is written at most this often: a page load costs a
#: read of its row, and a write only once a minute.
SEEN_EVERY = timedelta(minutes=1)
#: Longer values are not tokens this module made.
MAX_TOKEN = 64


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(db: Session, user: User, *, address: str | None, user_agent: str | None) -> str:
    """A new session of `user`; returns its token, which only the cookie keeps."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    db.add(AdminSession(user_id=user.id, token_sha256=digest(token), created_at=now,
                        last_seen_at=now, address=(address or "")[:64] or None,
                        user_agent=(user_agent or "")[:255] or None))
    return token


def live(db: Session, token: str) -> AdminSession | None:
    """The open session this token names, its user loaded and its last use stamped
    (at most once a SEEN_EVERY); None for an ended or unknown one."""
    if not token or len(token) > MAX_TOKEN:
        return None
    found = db.scalar(select(AdminSession).where(AdminSession.token_sha256 == digest(token),
                                                 AdminSession.ended_at.is_(None)))
    if found is None:
        return None
    now = utcnow()
    if found.last_seen_at is None or now - found.last_seen_at >= SEEN_EVERY:
        found.last_seen_at = now
    found.user  # noqa: B018 (loaded while the database session is open)
    return found


def end(db: Session, token: str) -> None:
    db.execute(update(AdminSession)
               .where(AdminSession.token_sha256 == digest(token), AdminSession.ended_at.is_(None))
               .values(ended_at=utcnow()))


def end_all(db: Session, user_id: int) -> int:
    """Ends every open session of the user; returns how many."""
    result = db.execute(update(AdminSession)
                        .where(AdminSession.user_id == user_id, AdminSession.ended_at.is_(None))
                        .values(ended_at=utcnow()))
    return result.rowcount


def open_sessions(db: Session, user_id: int) -> list[AdminSession]:
    """The user's open sessions, the last used first."""
    return list(db.scalars(select(AdminSession)
                           .where(AdminSession.user_id == user_id,
                                  AdminSession.ended_at.is_(None))
                           .order_by(AdminSession.last_seen_at.desc(), AdminSession.id.desc())))


# --- the page ---------------------------------------------------------------------------------


@bp.get("/sessions")
def sessions():
    with services().db.session() as db:
        rows = open_sessions(db, current_user.user_id)
    current = digest(current_user.session_token or "")
    return render_template("admin/sessions.html", rows=rows, current=current,
                           form=SessionsForm())


@bp.post("/sessions/<int:session_id>/end")
def end_session(session_id: int):
    _check_form()
    with services().db.session() as db:
        row = db.get(AdminSession, session_id)
        if row is None or row.user_id != current_user.user_id or row.ended_at is not None:
            abort(404, "you have no such open session")
        row.ended_at = utcnow()
        own = row.token_sha256 == digest(current_user.session_token or "")
    if own:
        return _logged_out("you are logged out")
    flash("that session is ended: its browser must log in again")
    return redirect(url_for("admin.sessions"), 303)


@bp.post("/sessions/end-all")
def end_all_sessions():
    _check_form()
    with services().db.session() as db:
        count = end_all(db, current_user.user_id)
    return _logged_out(f"you are logged out everywhere ({count} session"
                       f"{'s' if count != 1 else ''} ended)")


def _check_form() -> None:
    if not SessionsForm().validate_on_submit():
        abort(400, "the form expired; reload the page")


def _logged_out(message: str):
    logout_user()
    session.clear()
    flash(message)
    return redirect(url_for("admin.login"), 303)

