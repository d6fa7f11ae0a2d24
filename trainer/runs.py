"""A training run, as the trainer worker executes it (the job core.training.TASK names).

The run learns from the base photos (DATASET_DIR) and every reviewed record
with its true label, exports a candidate beside the served versions, gates it
against the version Serving answers with (trainer/gate.py), and promotes it
with one rename if it passes; a rejected candidate stays in candidates/ with
its figures. Its row in `training_runs` carries the phase, the progress and a
heartbeat the whole time, so the models page can show it and a dead worker's
run can be told from a slow one (core/training.py). Its end, whichever it is,
goes to the webhook as "training_run.finished".
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import update

from core import model_files, webhooks
from core.db import Database, TrainingRun, utcnow
from core.lifecycle.connections import Connections, for_this_process
from core.serving_client import ServingRequestError
from core.training import HEARTBEAT, Phase, RunStatus, finish, overall, reviewed_photos
from trainer import data, gate
from trainer.errors import DatasetError, TrainerError
from trainer.features import FeatureCache
from trainer.recipe import Recipe
from trainer.train import Result, train, view_features

log = logging.getLogger(__name__)

#: Seconds between two progress writes: often enough for a progress bar.
WRITE_EVERY = 0.5


class Cancelled(Exception):
    """An administrator asked the run to stop."""


class Reporter:
    """The `progress` of a training run: phase, share done and time left go to
    the run's row, and a thread beats while TensorFlow holds the main one.
    Raises Cancelled from the next report after a cancel request."""

    def __init__(self, db: Database, run_id: str):
        self.db, self.run_id = db, run_id
        self.started = time.monotonic()
        self.last_write = 0.0
        self.last_phase: Phase | None = None
        self.cancelled = threading.Event()
        self.stopping = threading.Event()
        self.beating = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> Reporter:
        self.beating.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stopping.set()
        self.beating.join()

    def phase(self, phase: Phase, fraction: float) -> None:
        if self.cancelled.is_set():
            raise Cancelled
        now = time.monotonic()
        if phase == self.last_phase and now - self.last_write < WRITE_EVERY and fraction < 1:
            return
        self.last_phase, self.last_write = phase, now
        done = overall(phase, fraction)
        elapsed = now - self.started
        eta = elapsed * (1 - done) / done if done > 0.02 else None
        self._write(phase=str(phase), progress=round(done, 4),
                    eta_seconds=None if eta is None else round(eta, 1))

    def reserved(self, version: int) -> None:
        self._write(version=version)

    def _write(self, **values) -> None:
        with self.db.session() as session:
            session.execute(update(TrainingRun).where(TrainingRun.id == self.run_id)
                            .values(heartbeat_at=utcnow(), **values))
            if session.get(TrainingRun, self.run_id).cancel_requested:
                self.cancelled.set()
        if self.cancelled.is_set():
            raise Cancelled

    def _beat(self) -> None:
        while not self.stopping.wait(HEARTBEAT):
            try:
                self._write()
            except Cancelled:
                pass  # raised in the main thread at its next report
            except Exception:  # a database hiccup must not end the run; the next beat retries
                continue


@dataclass(frozen=True)
class Reviewed:
    example: data.Example  # the stored upload, with its true label's index
    sha256: str
    label: str


def reviewed_examples(conns: Connections, class_names: list[str]) -> tuple[list[Reviewed], int]:
    """Every reviewed record's photo once (the latest review of a photo wins),
    and how many were left out because their true label is not a class here."""
    latest: dict[str, Reviewed] = {}
    foreign = 0
    with conns.db.session() as session:
        for row in session.scalars(reviewed_photos()):
            if row.true_label not in class_names:
                foreign += 1
                continue
            path = conns.store.path(row.image_sha256, row.image_format)
            if not path.is_file():
                continue  # removed from the store since: nothing to learn from
            latest[row.image_sha256] = Reviewed(
                data.Example(path, class_names.index(row.true_label)), row.image_sha256,
                row.true_label)
    return list(latest.values()), foreign


def execute(run_id: str) -> str:
    """The training run `run_id`, start to finish; returns its final status. However
    it ends, the webhook is told (core/webhooks.py) once the row says so."""
    conns = for_this_process()
    if not _start(conns.db, run_id):
        return "not queued"
    try:
        return _execute(conns, run_id)
    finally:
        _announce(conns, run_id)


def _execute(conns: Connections, run_id: str) -> str:
    model = conns.settings.model_dir
    try:
        with Reporter(conns.db, run_id) as reporter:
            status, message, figures = _run(conns, model, reporter)
    except Cancelled:
        return _end(conns.db, run_id, model, RunStatus.CANCELLED,
                    "cancelled by an administrator; nothing was promoted")
    except TrainerError as exc:
        return _end(conns.db, run_id, model, RunStatus.FAILED, f"{exc}; nothing was promoted")
    except BaseException as exc:
        _end(conns.db, run_id, model, RunStatus.FAILED,
             f"unexpected error ({type(exc).__name__}: {exc}); nothing was promoted")
        raise
    with conns.db.session() as session:
        run = session.get(TrainingRun, run_id)
        run.gate = figures
        run.progress = 1.0
        finish(run, status, message)
    return str(status)


def _announce(conns: Connections, run_id: str) -> None:
    """Tells the webhook "training_run.finished", with the run's row as it ended."""
    try:
        with conns.db.session() as session:
            run = session.get(TrainingRun, run_id)
            gate = run.gate if isinstance(run.gate, dict) else {}
            data = {"id": run.id, "status": run.status, "version": run.version,
                    "message": run.message, "gate_decision": gate.get("decision"),
                    "gate_reason": gate.get("reason"), "requested_by": run.requested_by,
                    "base_images": run.base_images, "reviewed_images": run.reviewed_images,
                    "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at)}
    except Exception:  # the database gone: the run's own end is what matters
        log.exception("training run %s: the webhook was not told", run_id)
        return
    webhooks.notify(conns, "training_run.finished", data)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds") + "Z"


def _start(db: Database, run_id: str) -> bool:
    """Queued -> running; False when the run was cancelled (or taken) meanwhile."""
    with db.session() as session:
        now = utcnow()
        taken = session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id, TrainingRun.status == RunStatus.QUEUED)
            .values(status=RunStatus.RUNNING, started_at=now, heartbeat_at=now,
                    phase=str(Phase.CHECKING), progress=0.0))
        return taken.rowcount == 1


def _end(db: Database, run_id: str, model: Path, status: RunStatus, message: str) -> str:
    with db.session() as session:
        run = session.get(TrainingRun, run_id)
        finish(run, status, message)
        if run.version is not None:
            model_files.discard_unfinished(model, run.version)
    return str(status)


def _run(conns: Connections, model: Path, reporter: Reporter) -> tuple[RunStatus, str, dict]:
    settings = conns.settings
    if not settings.dataset_dir.is_dir():
        raise DatasetError(f"the base data set {settings.dataset_dir} (DATASET_DIR) does not "
                           "exist on the trainer worker")
    class_names = [d.name for d in data.class_folders(settings.dataset_dir)]
    reviewed, foreign = reviewed_examples(conns, class_names)
    if not reviewed:
        raise DatasetError("no reviewed records with a class of this model: review some "
                           "records first")
    cache = FeatureCache(settings.feature_cache_dir, runtime="litert")
    result = train(settings.dataset_dir, model, replace(Recipe(), tflite=False),
                   extra=[r.example for r in reviewed], progress=reporter, cache=cache,
                   candidate=True, check_data=settings.check_photos_dir)
    with conns.db.session() as session:
        run = session.get(TrainingRun, reporter.run_id)
        run.base_images = result.metrics["data"]["images"]
        run.reviewed_images = len(reviewed)
    reporter.phase(Phase.GATE, 0.0)
    verdict = _gate(conns, result, reviewed, cache, reporter)
    figures = verdict.figures | {"left_out_foreign_labels": foreign}
    (result.report_dir / "gate.json").write_text(json.dumps(figures, indent=2) + "\n")
    if verdict.promote:
        try:
            model_files.promote(model, result.version)
        except model_files.PromotionError as exc:  # e.g. `make train` served a newer one
            return (RunStatus.REJECTED, f"version {result.version} passed the gate but was kept "
                    f"aside as a candidate: {exc}", figures)
        return RunStatus.PROMOTED, f"version {result.version} promoted: {verdict.reason}", figures
    return (RunStatus.REJECTED, f"version {result.version} kept aside as a candidate: "
            f"{verdict.reason}", figures)


def _gate(conns: Connections, result: Result, reviewed: list[Reviewed], cache: FeatureCache,
          reporter: Reporter) -> gate.Verdict:
    names, recipe, base, parts = result.class_names, result.recipe, result.base, result.parts
    examples = parts.train + [r.example for r in reviewed]
    owners = np.concatenate([np.full(len(parts.train), -1), np.arange(len(reviewed))])
    views = view_features(base, examples, recipe, cache)
    labels = np.array([e.label for e in examples])
    predicted = gate.cross_validate(
        np.concatenate(views), np.tile(labels, len(views)), np.tile(owners, len(views)),
        views[0][len(parts.train):], labels[len(parts.train):], num_classes=len(names),
        recipe=recipe, epochs=result.metrics["head_epochs"],
        on_fold=lambda f: reporter.phase(Phase.GATE, 0.6 * f))
    test = parts.test
    test_x = view_features(base, test, recipe, cache, plain_only=True)[0]
    test_predicted = result.model.get_layer("head").predict(test_x, verbose=0).argmax(axis=1)
    try:
        serving_version, answers = gate.serving_answers(
            conns.serving, [p.read_bytes() for p in
                            [r.example.path for r in reviewed] + [e.path for e in test]])
    except ServingRequestError as exc:
        reason = f"Serving could not be asked ({exc.message})"
        return gate.Verdict(False, f"{reason}: kept aside; promote it by hand once you are sure",
                            {"decision": "rejected", "reason": reason})
    reporter.phase(Phase.GATE, 0.9)
    return gate.verdict(
        class_names=names, candidate_version=result.version,
        reviewed_truth=[r.label for r in reviewed],
        reviewed_predicted=[names[i] for i in predicted],
        test_truth=[names[e.label] for e in test],
        test_predicted=[names[i] for i in test_predicted],
        serving_version=serving_version,
        serving_reviewed=None if answers is None else answers[:len(reviewed)],
        serving_test=None if answers is None else answers[len(reviewed):],
        margin=conns.settings.gate_margin)
