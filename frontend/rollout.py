"""The back office's side of the roll-out: reading it, changing it, and what the
models page shows of it (per-version figures, canary against stable, shadow
agreement, the events).

A change names versions Serving must have AVAILABLE now: a version that is
not loaded would leave its records waiting, so it is refused, not stored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import Prediction
from core.lifecycle.connections import Connections
from core.rollout import monitor, store
from core.rollout.state import Role, State, parse
from core.serving_client import ServingRequestError
from core.settings import Settings
from frontend.versions import served_versions


class NotAvailable(Exception):
    """A version the new state names is not AVAILABLE on Serving."""


class ServingDown(Exception):
    """Serving cannot say which versions it has loaded."""


class Changed(Exception):
    """Someone else changed the state between our read and our write."""


class BadWindow(ValueError):
    """A window the pages do not offer."""


def current(svc: Connections) -> store.Stored:
    with svc.db.session() as db:
        return store.load(db)


def change(svc: Connections, body: object, *, by: str) -> State:
    """Stores the state `body` asks for (RolloutError: a bad value)."""
    state = parse(body)
    if state.versions:
        try:
            available = {int(s["version"]) for s in served_versions(svc.settings)
                         if s["state"] == "AVAILABLE"}
        except ServingRequestError as exc:
            raise ServingDown(f"cannot ask Serving which versions are loaded: {exc.message}"
                              ) from exc
        missing = sorted(state.versions - available)
        if missing:
            raise NotAvailable(
                f"version {', '.join(map(str, missing))} is not AVAILABLE on Serving "
                f"(loaded: {', '.join(map(str, sorted(available))) or 'none'}); a version "
                f"gets traffic only once Serving has loaded it")
    with svc.db.session() as db:
        seen = store.load(db)
        try:
            store.save(db, state, by=by, seen=seen)
        except store.Conflict as exc:
            raise Changed(str(exc)) from exc
        store.record(db, "changed", _describe(state), actor=by, version=state.canary,
                     details={"before": seen.state.as_json(), "after": state.as_json()})
    return state


def set_auto_canary(svc: Connections, enabled: bool, *, by: str) -> store.Stored:
    with svc.db.session() as db:
        seen = store.load(db)
        try:
            saved = store.save(db, seen.state, by=by, seen=seen, auto_canary=enabled)
        except store.Conflict as exc:
            raise Changed(str(exc)) from exc
        store.record(db, "changed", f"automatic canaries {'on' if enabled else 'off'}",
                     actor=by)
    return saved


def _describe(state: State) -> str:
    if state.stable is None:
        return "the newest AVAILABLE version answers everything"
    parts = [f"version {state.stable} is stable"]
    if state.canary is not None:
        parts.append(f"version {state.canary} the canary at {state.canary_share:.0%}")
    if state.shadow is not None:
        parts.append(f"version {state.shadow} the shadow")
    return ", ".join(parts)


def figures_for(db: Session, settings: Settings, window: str | None) -> dict:
    """Each version's figures over a window the pages offer (the default if None),
    as templates/admin/_versions_figures.html shows them."""
    window = window or monitor.DEFAULT_WINDOW
    if window not in monitor.WINDOWS:
        raise BadWindow(f"window must be one of {', '.join(monitor.WINDOWS)}")
    return {"window": window, "windows": list(monitor.WINDOWS),
            "figures": monitor.figures(db, monitor.since(window),
                                       uncertain_below=settings.uncertain_below)}


@dataclass(frozen=True)
class Comparison:
    """Canary against stable since the canary began: what the guard weighs."""

    canary: monitor.Figures
    stable: monitor.Figures
    accuracy: monitor.Difference | None
    failures: monitor.Difference | None


def comparison(db: Session, stored: store.Stored, *, uncertain_below: float
               ) -> Comparison | None:
    state = stored.state
    if state.canary is None or stored.canary_since is None:
        return None
    found = monitor.figures(db, stored.canary_since, uncertain_below=uncertain_below,
                            roles=(Role.STABLE, Role.CANARY))
    canary = monitor.pick(found, state.canary, Role.CANARY)
    stable = monitor.pick(found, state.stable, Role.STABLE)
    return Comparison(canary, stable, monitor.accuracy_difference(canary, stable),
                      monitor.failure_difference(canary, stable))


def shadow_agreement(db: Session, version: int) -> dict[str, tuple[int, int]]:
    """Per class the real answer gave: (records the shadow also answered, of those
    the ones where it said the same)."""
    rows = db.execute(select(Prediction.label, Prediction.shadow_label, func.count())
                      .where(Prediction.shadow_version == version)
                      .group_by(Prediction.label, Prediction.shadow_label))
    total: Counter[str] = Counter()
    same: Counter[str] = Counter()
    for label, shadow_label, count in rows:
        total[label] += count
        if label == shadow_label:
            same[label] += count
    return {label: (total[label], same[label]) for label in sorted(total)}
