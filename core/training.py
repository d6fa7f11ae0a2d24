"""A training run's life cycle, as the site that starts it and the trainer
worker that executes it both read it.

A run is a row in `training_runs` and one RQ job on the training queue, which
only `python -m trainer worker` consumes. At most one run is active (queued or
running): the row's unique `active` flag makes the database refuse a second.
The worker reports the phase and progress, and with them a heartbeat; a
running run silent for longer than Settings.training_stale_after belongs to
a trainer worker that died (kill -9, a lost machine) and is reaped as failed
by whichever process sees it first, its unfinished files removed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from core import model_files
from core.db import Prediction, TrainingRun, utcnow
from core.lifecycle.status import Status
from core.settings import Settings

#: The job function, by name: the site must not import the trainer (TensorFlow).
TASK = "trainer.runs.execute"
#: Seconds between two heartbeats of a running run; the worker beats from a
#: thread of its own, whatever TensorFlow is busy with. A run silent for
#: Settings.training_stale_after counts as dead.
HEARTBEAT = 5


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)


class Phase(StrEnum):
    """What a running run is doing, in order; each one's share of a typical
    run's time weights the progress bar."""

    CHECKING = "checking photos"
    FEATURES = "features"
    HEAD = "head epochs"
    CALIBRATION = "calibration"
    EXPORT = "export"
    GATE = "gate"


WEIGHTS = {Phase.CHECKING: 0.10, Phase.FEATURES: 0.35, Phase.HEAD: 0.20,
           Phase.CALIBRATION: 0.05, Phase.EXPORT: 0.15, Phase.GATE: 0.15}


def overall(phase: Phase, fraction: float) -> float:
    """The whole run's share done when `phase` is `fraction` done."""
    before = sum(w for p, w in WEIGHTS.items() if list(Phase).index(p) < list(Phase).index(phase))
    return before + WEIGHTS[phase] * min(max(fraction, 0.0), 1.0)


def job_id(run_id: str) -> str:
    return f"train-{run_id}"


def reviewed_photos() -> Select:
    """The records a run learns from: answered, and given a true label by a reviewer."""
    return (select(Prediction)
            .where(Prediction.status == Status.DONE, Prediction.true_label.is_not(None))
            .order_by(Prediction.reviewed_at, Prediction.id))


def active_run(session: Session) -> TrainingRun | None:
    return session.scalar(select(TrainingRun).where(TrainingRun.active.is_(True)))


def finish(run: TrainingRun, status: RunStatus, message: str | None = None) -> None:
    run.status = status
    run.active = None
    run.finished_at = utcnow()
    run.eta_seconds = None
    if message is not None:
        run.message = message


def reap(session: Session, settings: Settings, now: datetime | None = None) -> list[str]:
    """Mark runs whose trainer worker died (no heartbeat for
    `training_stale_after` seconds) as failed and remove what they left half
    written; returns their ids."""
    limit = (now or utcnow()) - timedelta(seconds=settings.training_stale_after)
    dead = list(session.scalars(select(TrainingRun).where(
        TrainingRun.status == RunStatus.RUNNING, TrainingRun.heartbeat_at < limit)))
    for run in dead:
        finish(run, RunStatus.FAILED, "the trainer worker stopped mid-run (killed or lost); "
                                      "nothing was promoted: start the run again")
        if run.version is not None:
            model_files.discard_unfinished(settings.model_dir, run.version)
    return [run.id for run in dead]


def request_cancel(session: Session, run: TrainingRun) -> None:
    """A queued run is cancelled at once; a running one at its next progress report."""
    if run.status == RunStatus.QUEUED:
        finish(run, RunStatus.CANCELLED, "cancelled before it started")
    elif run.status == RunStatus.RUNNING:
        session.execute(update(TrainingRun).where(TrainingRun.id == run.id)
                        .values(cancel_requested=True))
        run.cancel_requested = True
