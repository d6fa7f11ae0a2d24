"""The database schema, and the one way every process opens the database.

A SQLite file by default (the embedded setup), PostgreSQL in production; the
schema is the same and is created and changed only by Alembic migrations
(core/migrations). Timestamps are naive UTC on both databases.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)

from core.lifecycle.status import Status


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def new_id() -> str:
    """Unguessable ids: a prediction's URL is all it takes to read it."""
    return secrets.token_hex(12)


class Source(StrEnum):
    PAGE = "page"
    API = "api"
    BATCH = "batch"


class Base(DeclarativeBase):
    pass


class Batch(Base):
    """Many images sent at once; each is a Prediction of its own."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(8))
    visitor: Mapped[str | None] = mapped_column(String(32), index=True)
    name: Mapped[str | None] = mapped_column(String(255))
    total: Mapped[int] = mapped_column(Integer)
    #: Files of the request that were not images: [{"name": ..., "error": ...}].
    rejected: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)

    predictions: Mapped[list[Prediction]] = relationship(back_populates="batch")


class Prediction(Base):
    """One uploaded image and what the model said about it."""

    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), index=True)
    source: Mapped[str] = mapped_column(String(8), index=True)
    #: The browser that sent it (a cookie), for its history page.
    visitor: Mapped[str | None] = mapped_column(String(32), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    image_format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)

    status: Mapped[str] = mapped_column(String(8), default=Status.QUEUED, index=True)
    #: The RQ job meant to answer it (a batch's chunk shares one): the sweeper
    #: looks it up to find records whose job never reached Redis or was lost.
    job_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    label: Mapped[str | None] = mapped_column(String(255), index=True)
    confidence: Mapped[float | None] = mapped_column(Float)
    #: The top score minus the runner-up's: small when the model hesitates
    #: between two classes (core/uncertainty.py).
    margin: Mapped[float | None] = mapped_column(Float)
    #: [{"label": ..., "score": ...}], best first.
    top_k: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    #: TF Serving versions are int64 (timestamps in milliseconds are common).
    model_version: Mapped[int | None] = mapped_column(BigInteger, index=True)
    #: Which side of the roll-out answered: stable, canary or newest (core/rollout).
    model_role: Mapped[str | None] = mapped_column(String(8), index=True)
    #: The shadow version's answer, stored beside the real one and never shown.
    shadow_version: Mapped[int | None] = mapped_column(BigInteger)
    shadow_label: Mapped[str | None] = mapped_column(String(255))
    shadow_confidence: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: Milliseconds the Serving call took (a batch's call, for batch images).
    serving_ms: Mapped[float | None] = mapped_column(Float)

    #: An administrator's verdict: was the label right, and what is the truth.
    correct: Mapped[bool | None] = mapped_column(Boolean, index=True)
    true_label: Mapped[str | None] = mapped_column(String(255))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime)
    reviewed_by: Mapped[str | None] = mapped_column(String(64))

    batch: Mapped[Batch | None] = relationship(back_populates="predictions")

    @property
    def seconds(self) -> float | None:
        """Upload to result."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at).total_seconds()


class User(Base):
    """An administrator of the back office."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime)


class ApiToken(Base):
    """A bearer token for /admin/api/*, for scripts; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)

    user: Mapped[User] = relationship()


class AdminSession(Base):
    """One logged-in browser of an administrator, kept on the server so that it can
    be ended: the signed cookie carries only a random token, whose SHA-256 is
    stored here. Logging out ends this row; "log out everywhere" and a password
    change end every row of the user (frontend/admin/sessions.py)."""

    __tablename__ = "admin_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    #: Shown to the administrator in the list of their sessions.
    address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))

    user: Mapped[User] = relationship()


class ApiKey(Base):
    """A key a program sends to the public API (`X-API-Key`) for quotas of its own
    instead of the per-address ones; only its SHA-256 is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    #: Images the key may send per hour and per day.
    images_per_hour: Mapped[int] = mapped_column(Integer)
    images_per_day: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class TrainingRun(Base):
    """One retraining from the base photos plus the reviewed records, and its gate.

    `active` is True while the run is queued or running and NULL after: its
    unique index lets the database itself refuse a second active run.
    """

    __tablename__ = "training_runs"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    status: Mapped[str] = mapped_column(String(10), index=True)
    active: Mapped[bool | None] = mapped_column(Boolean, unique=True, default=True)
    requested_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: Written with every progress report: a running run whose heartbeat stops
    #: belongs to a trainer worker that died (core/training.py).
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    phase: Mapped[str | None] = mapped_column(String(32))
    #: The whole run's share done, 0..1, and the seconds it expects still to take.
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    #: Why it failed, or what the gate decided, in a sentence.
    message: Mapped[str | None] = mapped_column(Text)
    #: The version number the candidate got (kept for rejected candidates too).
    version: Mapped[int | None] = mapped_column(BigInteger, index=True)
    base_images: Mapped[int | None] = mapped_column(Integer)
    reviewed_images: Mapped[int | None] = mapped_column(Integer)
    #: The gate's figures: both versions, overall and per class, and the decision.
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Database:
    """An engine and its sessions; each process makes one (after forking, for workers)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed at the end of the block, rolled back on an exception."""
        with self.sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL lets the site read while a worker writes; foreign keys are off by default."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
