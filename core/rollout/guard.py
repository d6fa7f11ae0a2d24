"""The canary's guard, run by the workers every ROLLOUT_CHECK_INTERVAL seconds
(worker/watch.py): a canary that fails more often than stable, or is less
accurate on reviewed records, by more than the stated margin once enough
evidence exists, loses its traffic; with automatic canaries opted in, a
version that passed the training gate becomes the canary.

Both sides are judged on what they answered since the canary got its share,
so the canary meets the same photos as stable over the same hours. Noise
alone must not roll a canary back: the difference must also be past zero at
95% (core/rollout/monitor.py), not only past the margin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import webhooks
from core.db import TrainingRun
from core.lifecycle.connections import Connections
from core.rollout import monitor, store
from core.rollout.state import Mode, Role, State
from core.serving_client import ServingRequestError
from core.settings.rollout import RolloutSettings
from core.training import RunStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    rollback: bool
    reason: str
    canary: monitor.Figures
    stable: monitor.Figures

    def details(self) -> dict:
        accuracy = monitor.accuracy_difference(self.canary, self.stable)
        failures = monitor.failure_difference(self.canary, self.stable)
        return {"canary": self.canary.as_json(), "stable": self.stable.as_json(),
                "accuracy_difference": accuracy.as_json() if accuracy else None,
                "failure_difference": failures.as_json() if failures else None}


def judge(db: Session, stored: store.Stored, rules: RolloutSettings, *,
          uncertain_below: float) -> Verdict | None:
    """The evidence on the running canary, or None when there is none running."""
    state = stored.state
    if state.mode is not Mode.PINNED or state.canary is None or stored.canary_since is None:
        return None
    found = monitor.figures(db, stored.canary_since, uncertain_below=uncertain_below,
                            roles=(Role.STABLE, Role.CANARY))
    canary = monitor.pick(found, state.canary, Role.CANARY)
    stable = monitor.pick(found, state.stable, Role.STABLE)
    failures = monitor.failure_difference(canary, stable)
    if (failures is not None and canary.predictions >= rules.min_predictions
            and failures.value > rules.failure_margin and failures.low > 0):
        return Verdict(True, f"the canary failed {canary.failure_rate:.1%} of "
                             f"{canary.predictions} predictions against stable's "
                             f"{stable.failure_rate:.1%}", canary, stable)
    accuracy = monitor.accuracy_difference(canary, stable)
    if (accuracy is not None and min(canary.reviewed, stable.reviewed) >= rules.min_reviewed
            and -accuracy.value > rules.accuracy_margin and accuracy.high < 0):
        return Verdict(True, f"the canary was right on {canary.accuracy:.1%} of "
                             f"{canary.reviewed} reviewed records against stable's "
                             f"{stable.accuracy:.1%} of {stable.reviewed}", canary, stable)
    return Verdict(False, "no evidence against the canary", canary, stable)


def check(conns: Connections) -> str | None:
    """One pass: rolls a failing canary back, or starts an automatic one; returns
    what it did, if anything."""
    settings = conns.settings
    with conns.db.session() as db:
        stored = store.load(db)
        verdict = judge(db, stored, settings.rollout, uncertain_below=settings.uncertain_below)
        rolled_back = (_roll_back(db, stored, verdict)
                       if verdict is not None and verdict.rollback else None)
    if rolled_back is not None:
        message, event = rolled_back
        webhooks.notify(conns, "canary.rolled_back", event)
        return message
    if stored.auto_canary and stored.state.mode is Mode.PINNED and stored.state.canary is None:
        return _auto_canary(conns, stored)
    return None


def _roll_back(db: Session, stored: store.Stored, verdict: Verdict) -> tuple[str, dict] | None:
    """The canary's share to 0, and the event; None if the state changed meanwhile."""
    state = stored.state
    try:
        store.save(db, State(Mode.PINNED, state.stable, None, 0.0, state.shadow),
                   by=store.AUTOMATIC, seen=stored)
    except store.Conflict:
        return None
    message = (f"version {state.canary} rolled back from a {state.canary_share:.0%} canary: "
               f"{verdict.reason}")
    details = verdict.details() | {"canary_share": state.canary_share,
                                   "answered": verdict.canary.predictions}
    store.record(db, "rollback", message, version=state.canary, details=details)
    log.warning("%s", message)
    return message, {"version": state.canary, "stable": state.stable, "message": message,
                     **details}


def _auto_canary(conns: Connections, stored: store.Stored) -> str | None:
    """The newest version a training run's gate passed, newer than stable, loaded on
    Serving and never a canary before, becomes the canary."""
    state = stored.state
    try:
        available = {int(s["version"]) for s in conns.serving.status()
                     if s["state"] == "AVAILABLE"}
    except ServingRequestError:
        return None
    with conns.db.session() as db:
        passed = db.scalars(select(TrainingRun.version).where(
            TrainingRun.status == RunStatus.PROMOTED, TrainingRun.version.is_not(None),
            TrainingRun.version > (state.stable or 0)).order_by(TrainingRun.version.desc()))
        tried = {e.version for e in store.events(db, limit=1000)
                 if e.kind in ("auto_canary", "rollback")}
        version = next((v for v in passed if v in available and v not in tried), None)
        if version is None:
            return None
        share = conns.settings.rollout.auto_canary_share
        try:
            store.save(db, State(Mode.PINNED, state.stable, version, share, state.shadow),
                       by=store.AUTOMATIC, seen=stored)
        except store.Conflict:
            return None
        message = f"version {version} passed the training gate and is the canary at {share:.0%}"
        store.record(db, "auto_canary", message, version=version,
                     details={"canary_share": share, "stable": state.stable})
    log.info("%s", message)
    return message
