"""API keys: programs that send `X-API-Key` to /api get quotas of their own.

A key is shown once, when it is made; the database keeps only its SHA-256 (as
for the administrators' tokens, frontend/tokens.py), so a copy of the
database cannot be replayed against the site. A key is named, so an operator
can revoke the one a program leaked without knowing its value.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db import ApiKey, utcnow
from frontend.tokens import digest

HEADER = "X-API-Key"
MAX_NAME = 64


class ApiKeyError(ValueError):
    """A key asked for under a name that is taken, empty or too long."""


@dataclass(frozen=True)
class Caller:
    """A request's valid key, as the quotas read it (no database session needed)."""

    id: int
    name: str
    images_per_hour: int
    images_per_day: int


def create(session: Session, name: str, *, images_per_hour: int, images_per_day: int) -> str:
    """A new key named `name` with these quotas; the only time it is readable."""
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise ApiKeyError(f"a key's name has 1 to {MAX_NAME} characters")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise ApiKeyError(f"there is a key named {name!r} already (revoked keys keep their "
                        "names); choose another name")
    if images_per_hour < 1 or images_per_day < 1:
        raise ApiKeyError("a key's quotas are at least 1 image")
    key = secrets.token_urlsafe(32)
    session.add(ApiKey(name=name, key_sha256=digest(key), images_per_hour=images_per_hour,
                       images_per_day=images_per_day))
    return key


def revoke(session: Session, name: str) -> bool:
    """Revokes the live key of that name; whether there was one."""
    result = session.execute(update(ApiKey)
                             .where(ApiKey.name == name.strip(), ApiKey.revoked_at.is_(None))
                             .values(revoked_at=utcnow()))
    return bool(result.rowcount)


def authenticate(session: Session, key: str) -> Caller | None:
    """The live key of that value, its use stamped; None for an unknown or revoked one."""
    found = session.scalar(select(ApiKey).where(ApiKey.key_sha256 == digest(key.strip()),
                                                ApiKey.revoked_at.is_(None)))
    if found is None:
        return None
    found.last_used_at = utcnow()
    return Caller(found.id, found.name, found.images_per_hour, found.images_per_day)
