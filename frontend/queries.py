"""What the admin back office reads from the database and writes to it:
administrators' logins, filtered records, reviews and statistics.

Aggregations run in SQL that SQLite and PostgreSQL share; the confidence
histogram is binned here, as the two disagree on rounding casts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ScalarResult, Select, case, func, select
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict
from werkzeug.security import check_password_hash

from core.contract import MAX_VERSION
from core.db import Prediction, User, utcnow
from core.lifecycle.status import Status

PAGE_SIZE = 50
BINS = 10
#: Compared against when the user name is unknown, so both cases take as long.
_DUMMY_HASH = "scrypt:32768:8:1$0000000000000000$" + "0" * 128


class FilterError(ValueError):
    pass


@dataclass(frozen=True)
class RecordFilter:
    label: str = ""
    status: str = ""
    source: str = ""
    model_version: int | None = None
    date_from: date | None = None
    date_to: date | None = None
    below: float | None = None  #: confidence under this
    reviewed: str = ""  #: "", "yes", "no", "right", "wrong"
    true_label: str = ""  #: what a reviewer said the image shows
    unsure: str = ""  #: "", "yes", "no": confidence under `uncertain_below`
    #: Settings.uncertain_below, given to `parse`: a setting, not a parameter of the URL.
    uncertain_below: float = field(default=1.0, metadata={"url": False})

    @classmethod
    def parse(cls, args: MultiDict[str, str], *, uncertain_below: float) -> RecordFilter:
        def text(name: str, allowed: tuple[str, ...] | None = None) -> str:
            value = args.get(name, "").strip()
            if allowed is not None and value not in ("", *allowed):
                raise FilterError(f"{name} must be one of {', '.join(allowed)}")
            return value[:255]

        def number(name: str, kind: type, low: float, high: float):
            raw = args.get(name, "").strip()
            if not raw:
                return None
            try:
                value = kind(raw)
            except ValueError:
                raise FilterError(f"{name} must be a number, not {raw!r}") from None
            if not low <= value <= high:
                raise FilterError(f"{name} must be between {low} and {high}")
            return value

        def day(name: str) -> date | None:
            raw = args.get(name, "").strip()
            try:
                return date.fromisoformat(raw) if raw else None
            except ValueError:
                raise FilterError(f"{name} must be a date like 2026-01-31") from None

        return cls(label=text("label"), status=text("status", tuple(Status)),
                   source=text("source", ("page", "api", "batch")),
                   model_version=number("model_version", int, 0, MAX_VERSION),
                   date_from=day("date_from"), date_to=day("date_to"),
                   below=number("below", float, 0.0, 1.0),
                   reviewed=text("reviewed", ("yes", "no", "right", "wrong")),
                   true_label=text("true_label"), unsure=text("unsure", ("yes", "no")),
                   uncertain_below=uncertain_below)

    def apply(self, statement: Select) -> Select:
        p = Prediction
        conditions = []
        if self.label:
            conditions.append(p.label == self.label)
        if self.status:
            conditions.append(p.status == self.status)
        if self.source:
            conditions.append(p.source == self.source)
        if self.model_version is not None:
            conditions.append(p.model_version == self.model_version)
        if self.date_from:
            conditions.append(p.created_at >= datetime.combine(self.date_from, datetime.min.time()))
        if self.date_to and self.date_to < date.max:
            end = datetime.combine(self.date_to + timedelta(days=1), datetime.min.time())
            conditions.append(p.created_at < end)
        if self.below is not None:
            conditions.append(p.confidence < self.below)
        if self.reviewed:
            conditions.append({"yes": p.correct.is_not(None), "no": p.correct.is_(None),
                               "right": p.correct.is_(True),
                               "wrong": p.correct.is_(False)}[self.reviewed])
        if self.true_label:
            conditions.append(p.true_label == self.true_label)
        if self.unsure == "yes":
            conditions.append(p.confidence < self.uncertain_below)
        elif self.unsure == "no":
            conditions.append(p.confidence >= self.uncertain_below)
        return statement.where(*conditions)

    def failed(self) -> RecordFilter | None:
        """The failed records among those this selects; None when it asks for another status."""
        return replace(self, status=Status.FAILED) if self.status in ("", Status.FAILED) else None

    def query_args(self) -> dict[str, str]:
        """The filter as URL parameters, for links to other pages and the CSV export."""
        out = {}
        for f in fields(self):
            if f.metadata.get("url") is False:
                continue
            value = getattr(self, f.name)
            if value not in (None, ""):
                out[f.name] = value.isoformat() if isinstance(value, date) else str(value)
        return out


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The administrator these credentials name, their login time stamped; None
    if either is wrong."""
    user = session.scalar(select(User).where(User.username == username))
    valid = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
    if not (user and valid):
        return None
    user.last_login_at = utcnow()
    return user


def records(session: Session, flt: RecordFilter, page: int) -> tuple[list[Prediction], int]:
    """One page of records, newest first, and how many match in all."""
    total = count(session, flt)
    rows = session.scalars(flt.apply(select(Prediction))
                           .order_by(Prediction.created_at.desc(), Prediction.id)
                           .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE))
    return list(rows), total


def count(session: Session, flt: RecordFilter) -> int:
    return session.scalar(flt.apply(select(func.count()).select_from(Prediction))) or 0


def all_records(session: Session, flt: RecordFilter):
    return session.scalars(flt.apply(select(Prediction)).order_by(Prediction.created_at.desc())
                           .execution_options(yield_per=500))


def failed_ids(session: Session, flt: RecordFilter) -> list[str]:
    failed = flt.failed()
    return list(session.scalars(failed.apply(select(Prediction.id)))) if failed else []


def reviewed(session: Session) -> ScalarResult[Prediction]:
    """Every reviewed record, by true label and then oldest first."""
    return session.scalars(select(Prediction).where(Prediction.true_label.is_not(None))
                           .order_by(Prediction.true_label, Prediction.created_at))


def save_review(session: Session, prediction_id: str, *, right: bool, true_label: str | None,
                reviewer: str) -> Prediction:
    """An administrator's verdict on a record's label, from the record's page or the
    review queue's JSON; `true_label` is what the image really shows, read only
    when the label is wrong."""
    row = session.get(Prediction, prediction_id)
    row.correct = right
    row.true_label = row.label if right else true_label.strip()
    row.reviewed_at = utcnow()
    row.reviewed_by = reviewer
    return row


def confusion(session: Session) -> dict[str, Any]:
    """Reviewed records counted by (predicted label, true label): the classes in
    both orders, and `cells[predicted][true]`."""
    p = Prediction
    counted = session.execute(select(p.label, p.true_label, func.count())
                              .where(p.true_label.is_not(None), p.label.is_not(None))
                              .group_by(p.label, p.true_label)).all()
    classes = sorted({label for label, _, _ in counted} | {true for _, true, _ in counted})
    cells = {label: dict.fromkeys(classes, 0) for label in classes}
    for label, true, n in counted:
        cells[label][true] = n
    return {"classes": classes, "cells": cells, "total": sum(n for _, _, n in counted)}


def labels(session: Session) -> list[str]:
    return sorted(filter(None, session.scalars(select(Prediction.label).distinct())))


def versions(session: Session) -> list[int]:
    return sorted(filter(None, session.scalars(select(Prediction.model_version).distinct())))


def statistics(session: Session) -> dict[str, Any]:
    p = Prediction
    done = p.status == Status.DONE
    per_class = session.execute(select(p.label, func.count()).where(done).group_by(p.label)
                                .order_by(func.count().desc())).all()
    day = func.date(p.created_at)
    per_day = session.execute(select(day, func.count()).group_by(day).order_by(day)).all()
    confidences = session.scalars(select(p.confidence).where(done))
    histogram = [0] * BINS
    for confidence in confidences:
        histogram[min(int(confidence * BINS), BINS - 1)] += 1
    accuracy = session.execute(
        select(p.model_version, func.count(),
               func.sum(case((p.correct.is_(True), 1), else_=0)))
        .where(p.correct.is_not(None)).group_by(p.model_version).order_by(p.model_version)).all()
    statuses = dict(session.execute(select(p.status, func.count()).group_by(p.status)).all())
    sources = dict(session.execute(select(p.source, func.count()).group_by(p.source)).all())
    latency = session.execute(select(func.avg(p.serving_ms)).where(done)).scalar()
    return {
        "total": sum(statuses.values()),
        "statuses": {s.value: statuses.get(s.value, 0) for s in Status},
        "sources": sources,
        "per_class": [{"label": label, "count": n} for label, n in per_class],
        "per_day": [{"day": str(d), "count": n} for d, n in per_day],
        "confidence_histogram": [{"range": f"{i / BINS:.1f}-{(i + 1) / BINS:.1f}", "count": n}
                                 for i, n in enumerate(histogram)],
        "accuracy_by_version": [{"model_version": v, "reviewed": n, "right": int(right or 0),
                                 "accuracy": (right or 0) / n}
                                for v, n, right in accuracy],
        "mean_serving_ms": latency,
    }
