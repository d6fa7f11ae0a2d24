"""The roll-out's tables: its one state row, and the events of its history.

Kept beside the rules that read them; core/migrations/env.py imports this
module so that Alembic sees them in core.db's metadata.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, utcnow


class RolloutRow(Base):
    """The roll-out state: one row, id 1, written by the admin API and the guard.

    `revision` grows with every change, so that the guard's rollback and an
    administrator's change never overwrite each other unseen.
    """

    __tablename__ = "rollout"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mode: Mapped[str] = mapped_column(String(8))
    stable: Mapped[int | None] = mapped_column(BigInteger)
    canary: Mapped[int | None] = mapped_column(BigInteger)
    canary_share: Mapped[float] = mapped_column(Float, default=0.0)
    shadow: Mapped[int | None] = mapped_column(BigInteger)
    #: A version passing the training gate becomes the canary by itself.
    auto_canary: Mapped[bool] = mapped_column(Boolean, default=False)
    #: When the current canary got its traffic: the guard weighs what came after.
    canary_since: Mapped[datetime | None] = mapped_column(DateTime)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class RolloutEvent(Base):
    """Something that changed who answers, or should make someone look: a change by
    an administrator, a rollback, an automatic canary, a drift alert."""

    __tablename__ = "rollout_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    version: Mapped[int | None] = mapped_column(BigInteger)
    #: A username, or "automatic" for the guard and the drift check.
    actor: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
