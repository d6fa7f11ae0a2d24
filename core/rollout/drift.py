"""Drift: whether the photos a version answers still look like the ones it was
validated on, judged by its own answers. Training photos are one set; users'
photos come from elsewhere, and when their mix changes (a new kind of photo, a
class grown common) the model's accuracy moves before anyone has reviewed enough
records to see it. What the version answers moves too, and that needs no labels.

Two distributions of a version's recent answers (status done, created in the
last DRIFT_WINDOW_HOURS) are compared with the same two on its validation
split, which the trainer records in the report's metrics.json as "reference"
(`reference()`): the mix of predicted classes, and the mix of top scores in
CONFIDENCE_EDGES' bins. The trainer takes its validation scores after
calibration, which are Serving's (trainer/calibration.py folds the temperature
into the exported model), so both sides are scores of the same model.

The measure is the population stability index, sum over bins of
(now - ref) * ln(now / ref): 0 for the same mix, about 0.1 for a shift worth
a look, 0.25 (DRIFT_THRESHOLD's default) for a large one. A version drifts when
it answered at least DRIFT_MIN_PREDICTIONS in the window and either index is
past the threshold; the workers' check (`check`, worker/watch.py) records one
"drift" event per version and window, and tells the webhook.

Pure Python, no numpy: the site and the workers do not install it.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from core import model_files, webhooks
from core.db import Prediction, utcnow
from core.lifecycle.connections import Connections
from core.lifecycle.status import Status
from core.rollout import store
from core.rollout.records import RolloutEvent
from core.settings import Settings

log = logging.getLogger(__name__)

#: The bins of the top score, shared by the trainer's reference and the site's
#: measure; finer near 1, where a calibrated model's answers crowd. A bin holds
#: [edge, next edge), the last one 1.0 as well.
CONFIDENCE_EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
#: The share an empty bin counts as: ln(0) is infinite, and a bin empty in a
#: validation split of a few dozen photos is rare, not impossible. 1e-4 keeps
#: a few stray answers there small (1% of answers in a bin the reference never
#: saw adds 0.05) while 5% adds 0.3, past the default threshold by itself.
EPSILON = 1e-4
EVENT = "drift"


# --- the mixes and the index ------------------------------------------------------------------

def confidence_bin(score: float, edges: Sequence[float] = CONFIDENCE_EDGES) -> int:
    return min(max(bisect.bisect_right(edges, score) - 1, 0), len(edges) - 2)


def shares(counts: Sequence[float]) -> list[float]:
    total = sum(counts)
    return [c / total for c in counts] if total else [0.0] * len(counts)


def psi(reference: Sequence[float], actual: Sequence[float], epsilon: float = EPSILON) -> float:
    """The population stability index of `actual` against `reference`, two lists
    of shares over the same bins; shares under `epsilon` count as `epsilon`."""
    if len(reference) != len(actual):
        raise ValueError("psi needs the same bins on both sides")
    total = 0.0
    for r, a in zip(reference, actual, strict=True):
        r, a = max(r, epsilon), max(a, epsilon)
        total += (a - r) * math.log(a / r)
    return total


def reference(class_names: Sequence[str], labels: Sequence[str],
              confidences: Sequence[float], split: str = "val") -> dict[str, Any]:
    """The "reference" entry of metrics.json: the predicted labels and top scores of
    a split, as Serving would answer them."""
    counts = dict.fromkeys(class_names, 0)
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    bins = [0] * (len(CONFIDENCE_EDGES) - 1)
    for score in confidences:
        bins[confidence_bin(float(score))] += 1
    n = len(labels)
    return {"split": split, "images": n,
            "class_mix": {k: (v / n if n else 0.0) for k, v in counts.items()},
            "confidence_edges": list(CONFIDENCE_EDGES), "confidence_mix": shares(bins)}


@dataclass(frozen=True)
class Reference:
    images: int
    class_mix: dict[str, float]
    edges: tuple[float, ...]
    confidence_mix: list[float]

    @classmethod
    def parse(cls, entry: object) -> Reference | None:
        """The entry as the trainer wrote it, or None for anything else (a report from
        before the entry existed, or one edited by hand)."""
        try:
            edges = tuple(float(e) for e in entry["confidence_edges"])
            mix = [float(s) for s in entry["confidence_mix"]]
            classes = {str(k): float(v) for k, v in entry["class_mix"].items()}
            images = int(entry["images"])
        except (TypeError, KeyError, ValueError, AttributeError):
            return None
        if (len(edges) < 3 or list(edges) != sorted(edges) or len(mix) != len(edges) - 1
                or not classes or images <= 0
                or not all(math.isfinite(v) for v in (*edges, *mix, *classes.values()))):
            return None
        return cls(images, classes, edges, mix)


def load_reference(settings: Settings, version: int) -> Reference | None:
    path = model_files.report_dir(settings.model_dir, version) / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return Reference.parse(metrics.get("reference")) if isinstance(metrics, dict) else None


# --- one version over the window --------------------------------------------------------------

@dataclass(frozen=True)
class Share:
    """One class, or one confidence bin: its share now and on the validation split."""

    name: str
    now: float
    reference: float


@dataclass(frozen=True)
class Drift:
    version: int
    window_hours: int
    predictions: int
    threshold: float
    min_predictions: int
    #: Photos of the validation split compared with; None: the report has no reference.
    reference_images: int | None
    psi_class_mix: float | None = None
    psi_confidence: float | None = None
    classes: list[Share] = field(default_factory=list)
    confidence: list[Share] = field(default_factory=list)

    @property
    def alert(self) -> bool:
        return (self.predictions >= self.min_predictions
                and any(p is not None and p > self.threshold
                        for p in (self.psi_class_mix, self.psi_confidence)))

    @property
    def enough(self) -> bool:
        return self.predictions >= self.min_predictions

    @property
    def worst(self) -> float | None:
        found = [p for p in (self.psi_class_mix, self.psi_confidence) if p is not None]
        return max(found) if found else None

    def message(self) -> str:
        return (f"version {self.version} drifted from its validation split: PSI "
                f"{_figure(self.psi_class_mix)} on the class mix and "
                f"{_figure(self.psi_confidence)} on the confidence over {self.predictions} "
                f"predictions in {self.window_hours} h (threshold {self.threshold:g}): "
                f"time to review and retrain")

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "window_hours": self.window_hours,
                "predictions": self.predictions, "min_predictions": self.min_predictions,
                "threshold": self.threshold, "reference_images": self.reference_images,
                "psi_class_mix": self.psi_class_mix, "psi_confidence": self.psi_confidence,
                "alert": self.alert,
                "classes": [{"class": s.name, "now": s.now, "reference": s.reference}
                            for s in self.classes],
                "confidence": [{"bin": s.name, "now": s.now, "reference": s.reference}
                               for s in self.confidence]}


def _figure(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def window(settings: Settings, now: datetime | None = None) -> tuple[datetime, datetime]:
    end = now or utcnow()
    return end - timedelta(hours=settings.monitoring.drift_window_hours), end


def _answers(since: datetime, until: datetime):
    return (Prediction.status == Status.DONE, Prediction.created_at >= since,
            Prediction.created_at <= until)


def measure(session: Session, settings: Settings, version: int,
            now: datetime | None = None) -> Drift | None:
    """The version's answers in the window against its reference; None when its
    report has no reference to compare with."""
    ref = load_reference(settings, version)
    if ref is None:
        return None
    since, until = window(settings, now)
    where = (*_answers(since, until), Prediction.model_version == version)
    labels = dict(session.execute(select(Prediction.label, func.count())
                                  .where(*where).group_by(Prediction.label)).all())
    # Binned by the database: a day of answers is not read row by row.
    which = case(*((Prediction.confidence < edge, i) for i, edge in enumerate(ref.edges[1:-1])),
                 else_=len(ref.edges) - 2)
    binned = dict(session.execute(select(which, func.count()).where(
        *where, Prediction.confidence.is_not(None)).group_by(which)).all())
    n = sum(labels.values())
    names = list(ref.class_mix) + sorted(str(k) for k in labels if k not in ref.class_mix)
    now_classes = shares([labels.get(k, 0) for k in names])
    ref_classes = [ref.class_mix.get(k, 0.0) for k in names]
    now_bins = shares([binned.get(i, 0) for i in range(len(ref.confidence_mix))])
    monitoring = settings.monitoring
    return Drift(
        version=version, window_hours=monitoring.drift_window_hours, predictions=n,
        threshold=monitoring.drift_threshold, min_predictions=monitoring.drift_min_predictions,
        reference_images=ref.images,
        psi_class_mix=psi(ref_classes, now_classes) if n else None,
        psi_confidence=psi(ref.confidence_mix, now_bins) if any(binned.values()) else None,
        classes=[Share(k, a, r) for k, a, r in zip(names, now_classes, ref_classes, strict=True)],
        confidence=[Share(f"{lo:g}-{hi:g}", a, r) for lo, hi, a, r in
                    zip(ref.edges[:-1], ref.edges[1:], now_bins, ref.confidence_mix,
                        strict=True)])


def recent(session: Session, settings: Settings, now: datetime | None = None) -> list[Drift]:
    """Every version that answered in the window, newest first; one without a
    reference is there with its count and no index."""
    since, until = window(settings, now)
    answered = session.execute(select(Prediction.model_version, func.count())
                               .where(*_answers(since, until),
                                      Prediction.model_version.is_not(None))
                               .group_by(Prediction.model_version)).all()
    monitoring = settings.monitoring
    found = []
    for version, count in sorted(answered, reverse=True):
        drift = measure(session, settings, version, now)
        found.append(drift or Drift(version, monitoring.drift_window_hours, count,
                                    monitoring.drift_threshold,
                                    monitoring.drift_min_predictions, None))
    return found


# --- the workers' check -----------------------------------------------------------------------

def check(conns: Connections, now: datetime | None = None) -> list[Drift]:
    """Records a "drift" event for each version newly past the threshold (one per
    version and window: a version drifting all day is told once a day) and
    tells the webhook; returns those drifts."""
    settings = conns.settings
    since, _ = window(settings, now)
    alerts = []
    with conns.db.session() as session:
        told = set(session.scalars(select(RolloutEvent.version).where(
            RolloutEvent.kind == EVENT, RolloutEvent.created_at >= since)))
        for drift in recent(session, settings, now):
            if drift.alert and drift.version not in told:
                store.record(session, EVENT, drift.message(), version=drift.version,
                             details=drift.as_json())
                alerts.append(drift)
    for drift in alerts:
        log.warning("%s", drift.message())
        webhooks.notify(conns, "drift.alert", {"message": drift.message(), **drift.as_json()})
    return alerts
