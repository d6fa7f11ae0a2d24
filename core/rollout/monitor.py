"""Per-version figures over a window of time, and canary against stable with
the uncertainty of the difference: what the models and statistics pages show
and what the guard decides on.

One pass over the window's finished records, grouped by version and role:
percentiles are taken here rather than in SQL, which SQLite lacks.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import Prediction, utcnow
from core.lifecycle.status import Status
from core.uncertainty import uncertain

#: The windows the pages offer, by name.
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7),
           "30d": timedelta(days=30)}
DEFAULT_WINDOW = "24h"
#: Two-sided 95%.
Z = 1.96


@dataclass
class Figures:
    """One version in one role over the window."""

    version: int
    role: str
    predictions: int = 0
    failures: int = 0
    reviewed: int = 0
    correct: int = 0
    unsure: int = 0
    confidence_sum: float = 0.0
    seconds: list[float] = field(default_factory=list, repr=False)
    classes: Counter[str] = field(default_factory=Counter)

    @property
    def answered(self) -> int:
        return self.predictions - self.failures

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.predictions if self.predictions else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.reviewed if self.reviewed else None

    @property
    def mean_confidence(self) -> float | None:
        return self.confidence_sum / self.answered if self.answered else None

    @property
    def unsure_share(self) -> float | None:
        return self.unsure / self.answered if self.answered else None

    @property
    def p50(self) -> float | None:
        return percentile(self.seconds, 0.5)

    @property
    def p99(self) -> float | None:
        return percentile(self.seconds, 0.99)

    def class_mix(self) -> dict[str, float]:
        total = sum(self.classes.values())
        return {k: v / total for k, v in self.classes.most_common()} if total else {}

    def as_json(self) -> dict:
        return {"version": self.version, "role": self.role, "predictions": self.predictions,
                "failures": self.failures, "failure_rate": self.failure_rate,
                "latency_p50_s": self.p50, "latency_p99_s": self.p99,
                "mean_confidence": self.mean_confidence, "unsure_share": self.unsure_share,
                "reviewed": self.reviewed, "accuracy": self.accuracy,
                "class_mix": self.class_mix()}


@dataclass(frozen=True)
class Difference:
    """Canary minus stable, of accuracy or failure rate, with its 95% interval."""

    value: float
    low: float
    high: float
    #: The records each side rests on (reviewed ones for accuracy).
    canary_n: int
    stable_n: int

    def as_json(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high,
                "canary_n": self.canary_n, "stable_n": self.stable_n}


def figures(db: Session, since: datetime | None, *, uncertain_below: float,
            roles: tuple[str, ...] | None = None) -> list[Figures]:
    """Every (version, role) that finished records since then, newest version first."""
    query = select(Prediction.model_version, Prediction.model_role, Prediction.status,
                   Prediction.label, Prediction.confidence, Prediction.correct,
                   Prediction.created_at, Prediction.finished_at).where(
        Prediction.status.in_((Status.DONE, Status.FAILED)))
    if since is not None:
        query = query.where(Prediction.created_at >= since)
    if roles is not None:
        query = query.where(Prediction.model_role.in_(roles))
    groups: dict[tuple[int, str], Figures] = {}
    for version, role, status, label, confidence, correct, created, finished in db.execute(query):
        if version is None and status == Status.FAILED:
            version = -1  # failed before any version was chosen
        if version is None:
            continue
        key = (version, role or "newest")
        f = groups.get(key) or groups.setdefault(key, Figures(*key))
        f.predictions += 1
        if status == Status.FAILED:
            f.failures += 1
            continue
        f.classes[label] += 1
        f.confidence_sum += confidence or 0.0
        f.unsure += uncertain(confidence, uncertain_below)
        if finished is not None:
            f.seconds.append((finished - created).total_seconds())
        if correct is not None:
            f.reviewed += 1
            f.correct += bool(correct)
    return sorted(groups.values(), key=lambda f: (-f.version, f.role))


def since(window: str, now: datetime | None = None) -> datetime:
    return (now or utcnow()) - WINDOWS[window]


def accuracy_difference(canary: Figures, stable: Figures) -> Difference | None:
    if not canary.reviewed or not stable.reviewed:
        return None
    return _difference(canary.correct, canary.reviewed, stable.correct, stable.reviewed)


def failure_difference(canary: Figures, stable: Figures) -> Difference | None:
    if not canary.predictions or not stable.predictions:
        return None
    return _difference(canary.failures, canary.predictions, stable.failures, stable.predictions)


def _difference(hits_c: int, n_c: int, hits_s: int, n_s: int) -> Difference:
    """Wald's interval of a difference of two proportions, each proportion pulled
    towards 1/2 by one success and one failure (Agresti and Caffo), so that a side
    with no errors yet still has an uncertainty."""
    p_c, p_s = (hits_c + 1) / (n_c + 2), (hits_s + 1) / (n_s + 2)
    se = math.sqrt(p_c * (1 - p_c) / (n_c + 2) + p_s * (1 - p_s) / (n_s + 2))
    value = hits_c / n_c - hits_s / n_s
    centre = p_c - p_s
    return Difference(value, centre - Z * se, centre + Z * se, n_c, n_s)


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def pick(found: list[Figures], version: int | None, role: str) -> Figures:
    """The figures of that version in that role, empty ones if it answered nothing."""
    for f in found:
        if f.version == version and f.role == role:
            return f
    return Figures(version if version is not None else -1, role)
