"""API tokens: how scripts authenticate to /admin/api/ without a browser session.

A token is shown once, when it is made; the database keeps only its SHA-256,
so a copy of the database cannot be replayed against the site. A token is a
random 256-bit secret, so a plain hash (no salt, no stretching) is enough:
there is nothing to guess.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db import ApiToken, User, utcnow

#: Scripts send `Authorization: Bearer <token>`.
SCHEME = "bearer"


class UnknownAdministrator(LookupError):
    """A token asked for in the name of nobody."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(session: Session, username: str) -> str:
    """A new token for the administrator `username`; the only time it is readable."""
    user = _user(session, username)
    token = secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_sha256=digest(token)))
    return token


def revoke(session: Session, username: str) -> int:
    """Revokes every live token of `username`; returns how many."""
    user = _user(session, username)
    result = session.execute(update(ApiToken)
                             .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                             .values(revoked_at=utcnow()))
    return result.rowcount


def authenticate(session: Session, header: str) -> User | None:
    """The administrator an Authorization header's live token belongs to, its use
    stamped; None for any other header, an unknown or a revoked token."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != SCHEME or not token.strip():
        return None
    found = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest(token.strip()),
                                                  ApiToken.revoked_at.is_(None)))
    if found is None:
        return None
    found.last_used_at = utcnow()
    return found.user


def _user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UnknownAdministrator(f"there is no administrator {username!r}; "
                                   f"make one with create-admin first")
    return user
