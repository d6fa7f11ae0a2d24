"""What the models page says about each version: where it came from, what its
gate measured, how it did on reviewed records since it went live, and what
changed per class against the version before it.

Everything is read from what others wrote: the trainer's reports
(metrics.json: `data.reviewed_images`, `test.per_class`), its training runs'
rows (`version`, `reviewed_images`, `gate`) and the reviews. Any of them may
be missing or partial (a version trained before the loop, a run cut short),
so every figure here is optional.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from core.db import Prediction, TrainingRun


def dig(value: Any, *keys: str) -> Any:
    """value[k1][k2]... or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def live_accuracy(session: Session) -> dict[int, dict[str, Any]]:
    """Per version, its answers that were reviewed: how many, how many right."""
    p = Prediction
    rows = session.execute(select(p.model_version, func.count(),
                                  func.sum(case((p.correct.is_(True), 1), else_=0)))
                           .where(p.correct.is_not(None), p.model_version.is_not(None))
                           .group_by(p.model_version)).all()
    return {int(v): {"reviewed": n, "right": int(right or 0), "accuracy": (right or 0) / n}
            for v, n, right in rows}


def runs_by_version(session: Session) -> dict[int, TrainingRun]:
    """The newest run that produced each version."""
    found: dict[int, TrainingRun] = {}
    for run in session.scalars(select(TrainingRun).where(TrainingRun.version.is_not(None))
                               .order_by(TrainingRun.created_at)):
        found[int(run.version)] = run
    return found


def origin(report: dict | None, run: TrainingRun | None) -> str:
    reviewed = run.reviewed_images if run and run.reviewed_images is not None else dig(
        report, "data", "reviewed_images")
    text = f"base + {reviewed} reviewed photos" if reviewed else "base photos only"
    return f"{text}, run {run.id}" if run else text


def gate_rows(gate: Any) -> dict[str, Any] | None:
    """The gate's figures as the page lays them out: one row per data set and
    class, candidate beside serving; None without a gate."""
    if not isinstance(gate, dict):
        return None
    sets = []
    for key, title in (("reviewed", "reviewed photos"), ("base_test", "base test split")):
        part = gate.get(key)
        if not isinstance(part, dict):
            continue
        candidate, serving = part.get("candidate"), part.get("serving")
        classes = sorted(set(dig(candidate, "per_class") or {})
                         | set(dig(serving, "per_class") or {}))
        sets.append({
            "title": title, "images": part.get("images"),
            "overall": (dig(candidate, "accuracy"), dig(serving, "accuracy")),
            "per_class": [(name, dig(candidate, "per_class", name, "accuracy"),
                           dig(serving, "per_class", name, "accuracy"),
                           dig(candidate, "per_class", name, "images")) for name in classes],
        })
    return {"decision": gate.get("decision"), "reason": gate.get("reason"),
            "margin": gate.get("margin"), "method": gate.get("method"),
            "serving_version": gate.get("serving_version"), "sets": sets}


def class_changes(reports: dict[int, dict], version: int) -> tuple[int | None, list[tuple]]:
    """Per class test recall of `version` against the newest older version with a
    report: (that version, [(class, recall, before)]); before is None for a new class."""
    now = dig(reports.get(version), "test", "per_class")
    older = [v for v in reports if v < version and dig(reports[v], "test", "per_class")]
    if not isinstance(now, dict) or not older:
        return None, []
    previous = max(older)
    before = dig(reports[previous], "test", "per_class")
    return previous, [(name, dig(now, name, "recall"), dig(before, name, "recall"))
                      for name in sorted(now)]
