"""Reading and changing the roll-out state in the database, with its history.

Every change bumps the row's revision inside the UPDATE's WHERE, so of two
writers that read the same state (an administrator and the guard's rollback)
the second is refused instead of silently undoing the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db import utcnow
from core.rollout.records import RolloutEvent, RolloutRow
from core.rollout.state import Mode, State

ROW_ID = 1
AUTOMATIC = "automatic"


class Conflict(Exception):
    """The state changed since it was read."""


@dataclass(frozen=True)
class Stored:
    state: State
    revision: int
    auto_canary: bool
    canary_since: datetime | None
    updated_at: datetime | None
    updated_by: str | None


def load(db: Session) -> Stored:
    row = db.get(RolloutRow, ROW_ID)
    if row is None:
        return Stored(State(), 0, False, None, None, None)
    state = State(Mode(row.mode), row.stable, row.canary, row.canary_share, row.shadow)
    return Stored(state, row.revision, row.auto_canary, row.canary_since, row.updated_at,
                  row.updated_by)


def save(db: Session, state: State, *, by: str, seen: Stored,
         auto_canary: bool | None = None) -> Stored:
    """Writes `state` over `seen` (raising Conflict if it is no longer current); the
    canary's clock restarts whenever the canary version or its share changes."""
    now = utcnow()
    old = seen.state
    since = seen.canary_since
    if state.canary is None:
        since = None
    elif (state.canary, state.canary_share) != (old.canary, old.canary_share):
        since = now
    values: dict[str, Any] = {
        "mode": str(state.mode), "stable": state.stable, "canary": state.canary,
        "canary_share": state.canary_share, "shadow": state.shadow, "canary_since": since,
        "revision": seen.revision + 1, "updated_at": now, "updated_by": by,
        "auto_canary": seen.auto_canary if auto_canary is None else auto_canary}
    if db.get(RolloutRow, ROW_ID) is None:
        if seen.revision != 0:
            raise Conflict("the roll-out state was removed meanwhile")
        db.add(RolloutRow(id=ROW_ID, **values))
        db.flush()
    else:
        result = db.execute(update(RolloutRow).where(RolloutRow.id == ROW_ID,
                                                     RolloutRow.revision == seen.revision)
                            .values(**values))
        if not result.rowcount:
            raise Conflict("the roll-out state changed meanwhile; read it again")
    return Stored(state, seen.revision + 1, values["auto_canary"], since, now, by)


def record(db: Session, kind: str, message: str, *, version: int | None = None,
           actor: str = AUTOMATIC, details: dict[str, Any] | None = None) -> RolloutEvent:
    event = RolloutEvent(kind=kind, message=message, version=version, actor=actor,
                         details=details, created_at=utcnow())
    db.add(event)
    db.flush()
    return event


def events(db: Session, limit: int = 20, kind: str | None = None) -> list[RolloutEvent]:
    query = select(RolloutEvent).order_by(RolloutEvent.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(RolloutEvent.kind == kind)
    return list(db.scalars(query))


def event_json(event: RolloutEvent) -> dict[str, Any]:
    return {"id": event.id, "at": event.created_at.isoformat(timespec="seconds") + "Z",
            "kind": event.kind, "version": event.version, "actor": event.actor,
            "message": event.message, "details": event.details}
