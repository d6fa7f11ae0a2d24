"""The review queue: which answered records an administrator should look at
first, the classes each can be given, and how many were reviewed per class.

First the records the model hesitated over, least sure first: a calibrated
top score under Settings.uncertain_below, or the two best scores closer than
core.uncertainty.CLOSE_MARGIN. Then all the others, newest first.
"""

from __future__ import annotations

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from core.db import Prediction
from core.lifecycle.status import Status
from core.settings import Settings
from core.uncertainty import CLOSE_MARGIN
from frontend import queries, versions

#: Records the page receives at once; it asks for more when it has shown them.
BATCH = 50


class ReviewRefused(ValueError):
    """A review that cannot be saved, with a sentence that says why."""


class NotAnswered(ReviewRefused):
    """The record failed or waits for its answer: there is no label to judge."""


def worth_a_look(uncertain_below: float):
    p = Prediction
    return or_(p.confidence < uncertain_below, p.margin < CLOSE_MARGIN)


def _answered(statement, flt: queries.RecordFilter):
    p = Prediction
    return flt.apply(statement).where(p.status == Status.DONE, p.label.is_not(None))


def count(session: Session, flt: queries.RecordFilter) -> int:
    """How many answered records the filter selects: the queue's length."""
    return session.scalar(_answered(select(func.count()).select_from(Prediction), flt)) or 0


def queue(session: Session, flt: queries.RecordFilter, *, limit: int = BATCH) -> list[Prediction]:
    """Answered records the filter selects, in the order worth reviewing them."""
    p = Prediction
    unsure = worth_a_look(flt.uncertain_below)
    statement = (_answered(select(p), flt)
                 .order_by(case((unsure, 0), else_=1),
                           case((unsure, p.confidence), else_=0.0),
                           case((unsure, func.coalesce(p.margin, 1.0)), else_=0.0),
                           p.created_at.desc(), p.id)
                 .limit(limit))
    return list(session.scalars(statement))


def classes(session: Session, settings: Settings, record: Prediction) -> list[str]:
    """The classes a record may be given, sorted so a class keeps its key from one
    photo to the next: those its model version's report names (every class
    of that model), the labels in its own top_k (the worker keeps the best 5),
    and any label a model has answered with."""
    known = set(versions.class_names(settings, record.model_version))
    known |= {str(t["label"]) for t in record.top_k or []}
    known |= set(queries.labels(session))
    return sorted(known)


def save(session: Session, settings: Settings, prediction_id: str, label: object, *,
         reviewer: str) -> Prediction | None:
    """The review the queue sends: `label` is what the image shows, the
    predicted label meaning "right". None for an unknown record; raises
    NotAnswered for a record without an answer, ReviewRefused for a label that is
    not one of its classes."""
    record = session.get(Prediction, prediction_id)
    if record is None:
        return None
    if record.status != Status.DONE or record.label is None:
        raise NotAnswered(f"only answered records can be reviewed; this one is {record.status}")
    if not isinstance(label, str) or not label.strip():
        raise ReviewRefused('send {"label": "<class>"}: the class the image shows')
    allowed = classes(session, settings, record)
    if label.strip() not in allowed:
        raise ReviewRefused(f"unknown class {label.strip()[:100]!r}; the classes are "
                            f"{', '.join(allowed)}")
    return queries.save_review(session, prediction_id, right=label.strip() == record.label,
                               true_label=label, reviewer=reviewer)


def reviewed_per_class(session: Session) -> dict[str, int]:
    p = Prediction
    counted = session.execute(select(p.true_label, func.count()).where(p.true_label.is_not(None))
                              .group_by(p.true_label).order_by(p.true_label))
    return dict(counted.all())
