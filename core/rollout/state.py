"""The roll-out rules every process agrees on: the state's values, and which
version answers a prediction.

`newest`: the newest AVAILABLE version answers everything, as TF Serving does
for unpinned requests. `pinned`: `stable` answers, except the `canary_share`
of predictions whose id hashes below that share; a `shadow` version also
answers `shadow_share` of them (an independent hash), and that answer is only
stored. Hashing the id makes the choice deterministic: a retried record goes
to the same side, and any process can tell where a record belongs.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from core.contract import MAX_VERSION

MIN_CANARY_SHARE = 0.01
MAX_CANARY_SHARE = 0.5
FIELDS = ("mode", "stable", "canary", "canary_share", "shadow")


class Mode(StrEnum):
    NEWEST = "newest"
    PINNED = "pinned"


class Role(StrEnum):
    """Who answered a prediction; the shadow's answer is never the record's."""

    NEWEST = "newest"
    STABLE = "stable"
    CANARY = "canary"


class RolloutError(ValueError):
    """A state that cannot be: the message says which field and why."""


@dataclass(frozen=True)
class State:
    mode: Mode = Mode.NEWEST
    stable: int | None = None
    canary: int | None = None
    canary_share: float = 0.0
    shadow: int | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"mode": str(self.mode)}

    @property
    def versions(self) -> set[int]:
        """The versions this state gives traffic to (Serving must have them loaded)."""
        return {v for v in (self.stable, self.canary, self.shadow) if v is not None}


def parse(body: object) -> State:
    """The state an API body asks for, checked field by field."""
    if not isinstance(body, dict):
        raise RolloutError('send a JSON object {"mode", "stable", "canary", "canary_share", '
                           '"shadow"}')
    unknown = set(body) - set(FIELDS)
    if unknown:
        raise RolloutError(f"unknown fields: {', '.join(sorted(map(str, unknown)))}")
    if body.get("mode") not in set(Mode):
        raise RolloutError('mode must be "newest" or "pinned"')
    mode = Mode(body["mode"])
    stable, canary, shadow = (_version(body, name) for name in ("stable", "canary", "shadow"))
    share = body.get("canary_share", 0)
    if isinstance(share, bool) or not isinstance(share, int | float) or share != share:
        raise RolloutError("canary_share must be a number")
    share = float(share)
    if mode is Mode.NEWEST:
        if stable is not None or canary is not None or shadow is not None or share:
            raise RolloutError("mode newest takes no stable, canary, canary_share or shadow: "
                               "the newest AVAILABLE version answers everything")
        return State()
    if stable is None:
        raise RolloutError("mode pinned needs a stable version")
    if canary is None:
        if share:
            raise RolloutError("canary_share must be 0 without a canary")
    elif not MIN_CANARY_SHARE <= share <= MAX_CANARY_SHARE:
        raise RolloutError(f"canary_share must be from {MIN_CANARY_SHARE} to "
                           f"{MAX_CANARY_SHARE} with a canary")
    if canary is not None and canary == stable:
        raise RolloutError("the canary must be another version than stable")
    if shadow is not None and shadow in (stable, canary):
        raise RolloutError("the shadow must be another version than stable and canary")
    return State(mode, stable, canary, share, shadow)


def _version(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VERSION:
        raise RolloutError(f"{name} must be a version number or null")
    return value


def bucket(prediction_id: str, purpose: str) -> float:
    """Where an id falls in [0, 1) for one purpose ("canary", "shadow"): uniform
    over ids, and independent between purposes."""
    digest = hashlib.sha256(f"{purpose}:{prediction_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def route(state: State, prediction_id: str, newest: int) -> tuple[int, Role]:
    """The version that answers this prediction, and in which role."""
    if state.mode is Mode.NEWEST:
        return newest, Role.NEWEST
    if state.canary is not None and bucket(prediction_id, "canary") < state.canary_share:
        return state.canary, Role.CANARY
    assert state.stable is not None
    return state.stable, Role.STABLE


def shadowed(state: State, prediction_id: str, share: float) -> bool:
    """Whether the shadow version also answers this prediction."""
    return state.shadow is not None and bucket(prediction_id, "shadow") < share
