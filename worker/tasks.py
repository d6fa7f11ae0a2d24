"""The jobs RQ workers run: classify stored uploads through Serving, store the answers.

One job holds one upload or a chunk of a batch. The roll-out state (core/rollout)
says which version answers each record; the records of one version go to
Serving in one predict call pinned to it, so each record names the version
that really answered and in which role. The shadow's answers are stored
beside the real ones. Writes are guarded by status: a job that runs twice
(a retry, the sweeper) never writes a second result.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

from redis import Redis, RedisError
from rq.job import Job
from rq.timeouts import JobTimeoutException
from sqlalchemy import func, select, update

from core.db import Database, Prediction, utcnow
from core.lifecycle.connections import Connections, for_this_process
from core.lifecycle.jobs import channel
from core.lifecycle.status import UNFINISHED, Status
from core.rollout import store as rollout_store
from core.rollout.state import Mode, Role, route, shadowed
from core.serving_client import Prediction as Answer
from core.serving_client import ServingClient, ServingRequestError
from core.uncertainty import margin
from worker import metrics

log = logging.getLogger(__name__)

TOP_K = 5


class ServingUnavailable(Exception):
    """Serving could not answer now (down, overloaded, no version loaded): RQ retries.

    Serving's other errors fail the record at once, with its message. Any other
    exception (a database hiccup) is retried as well: it may pass too."""


def predict(prediction_ids: list[str]) -> dict[str, int]:
    """Classifies these uploads; returns how many were done, failed and skipped."""
    started = time.perf_counter()
    r = for_this_process()
    rows = _start(r.db, prediction_ids)
    outcomes: list[tuple[str, dict[str, object]]] = []
    images: dict[str, bytes] = {}
    for row in rows:
        try:
            images[row.id] = r.store.read(row.image_sha256, row.image_format)
        except OSError as exc:
            log.error("prediction %s: cannot read its image: %s", row.id, exc)
            outcomes.append((row.id, _failed("the image is missing from storage")))
    if images:
        try:
            plan = _plan(r, list(images))
        except ServingRequestError as exc:  # not retryable: a wrong model name, say
            outcomes += [(pid, _failed(_readable(exc))) for pid in images]
        else:
            outcomes += _answer(r.serving, images, plan)
    written = _write(r, outcomes)
    counts = {"done": 0, "failed": 0, "skipped": len(prediction_ids) - len(written)}
    for prediction_id, values in outcomes:
        if prediction_id in written and "model_version" in values:
            ms = values.get("serving_ms")
            metrics.answered(values["model_version"], values["model_role"], values["status"],
                             ms / 1000 if isinstance(ms, float) else None)
    for status in written.values():
        counts[status] += 1
    metrics.job_done(time.perf_counter() - started, counts)
    return counts


def on_failure(job: Job, connection: Redis, exc_type: type[BaseException],
               exc: BaseException, traceback: TracebackType | None) -> None:
    """RQ calls this after every failed attempt: a record waits for the retry, or,
    with the retries spent, is failed with a reason a user can read."""
    r = for_this_process()
    ids: Sequence[str] = job.args[0]
    if job.should_retry:
        with r.db.session() as session:
            session.execute(update(Prediction).where(Prediction.id.in_(ids),
                                                     Prediction.status.in_(UNFINISHED))
                            .values(status=Status.QUEUED))
        return
    with r.db.session() as session:
        attempts = session.scalar(select(func.max(Prediction.attempts))
                                  .where(Prediction.id.in_(ids))) or 1
    if isinstance(exc, JobTimeoutException):
        reason = f"classification took longer than {job.timeout} s"
    elif isinstance(exc, ServingUnavailable):
        times = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        reason = f"the model server did not answer after {times} ({exc})"
    else:
        reason = f"an internal error ({exc_type.__name__}); its details are in the worker's log"
    _write(r, [(prediction_id, _failed(reason)) for prediction_id in ids])


def _start(db: Database, ids: Sequence[str]) -> list[Prediction]:
    with db.session() as session:
        rows = list(session.scalars(select(Prediction).where(
            Prediction.id.in_(ids), Prediction.status.in_(UNFINISHED))))
        for row in rows:
            row.status = Status.RUNNING
            row.started_at = utcnow()
            row.attempts += 1
    order = {pid: i for i, pid in enumerate(ids)}
    return sorted(rows, key=lambda row: order[row.id])


@dataclass
class Plan:
    """Who answers each record of a job: (version, role), and the shadow's records."""

    routes: dict[str, tuple[int, Role]]
    shadow: int | None = None
    shadowed: list[str] = field(default_factory=list)

    def groups(self) -> dict[tuple[int, Role], list[str]]:
        found: dict[tuple[int, Role], list[str]] = defaultdict(list)
        for prediction_id, side in self.routes.items():
            found[side].append(prediction_id)
        return found


def _plan(r: Connections, ids: list[str]) -> Plan:
    """Routes by the roll-out state among the versions Serving has AVAILABLE: a canary
    that is not loaded gives its records to stable; a stable that is not loaded
    holds them back (ServingUnavailable, retried), as no other version may answer."""
    available = _available(r.serving)
    with r.db.session() as session:
        state = rollout_store.load(session).state
    if state.mode is Mode.PINNED and state.stable not in available:
        raise ServingUnavailable(f"stable version {state.stable} is not loaded on Serving")
    routes = {}
    for prediction_id in ids:
        version, role = route(state, prediction_id, max(available))
        if version not in available:
            version, role = state.stable, Role.STABLE
        routes[prediction_id] = (version, role)
    plan = Plan(routes)
    if state.shadow in available:
        share = r.settings.rollout.shadow_share
        plan.shadow = state.shadow
        plan.shadowed = [pid for pid in ids if shadowed(state, pid, share)]
    return plan


def _available(client: ServingClient) -> set[int]:
    try:
        states = client.status()
    except ServingRequestError as exc:
        if exc.retryable:
            raise ServingUnavailable(exc.message) from exc
        raise
    available = {int(s["version"]) for s in states if s["state"] == "AVAILABLE"}
    if not available:
        raise ServingUnavailable(f"model {client.model!r} has no version loaded yet")
    return available


def _answer(client: ServingClient, images: dict[str, bytes],
            plan: Plan) -> list[tuple[str, dict[str, object]]]:
    outcomes: list[tuple[str, dict[str, object]]] = []
    labels: dict[str, str] = {}
    for (version, role), ids in plan.groups().items():
        answers, serving_ms = _classify(client, [images[i] for i in ids], version)
        for prediction_id, answer in zip(ids, answers, strict=True):
            served = {"model_version": version, "model_role": str(role)}
            if isinstance(answer, ServingRequestError):
                outcomes.append((prediction_id, _failed(_readable(answer)) | served))
            else:
                labels[prediction_id] = answer.label
                outcomes.append((prediction_id, _done(answer, serving_ms) | served))
    shadows = _shadow(client, images, plan, labels)
    return [(pid, values | shadows.get(pid, {})) for pid, values in outcomes]


def _shadow(client: ServingClient, images: dict[str, bytes], plan: Plan,
            labels: dict[str, str]) -> dict[str, dict[str, object]]:
    """The shadow's answers to the answered records it was given; its failures cost
    the records nothing."""
    ids = [pid for pid in plan.shadowed if pid in labels]
    if plan.shadow is None or not ids:
        return {}
    try:
        answers, _ = _classify(client, [images[i] for i in ids], plan.shadow)
    except ServingUnavailable as exc:
        log.warning("shadow version %s did not answer: %s", plan.shadow, exc)
        return {}
    found = {}
    for prediction_id, answer in zip(ids, answers, strict=True):
        if isinstance(answer, Answer):
            found[prediction_id] = {"shadow_version": plan.shadow, "shadow_label": answer.label,
                                    "shadow_confidence": float(answer.confidence)}
            metrics.shadow_compared(plan.shadow, answer.label == labels[prediction_id])
    return found


def _classify(client: ServingClient, images: list[bytes],
              version: int) -> tuple[list[Answer | ServingRequestError], float]:
    """All images in one call; if the call is refused (a bad image among them),
    each image alone, so only the bad one fails."""
    started = time.perf_counter()
    try:
        answers: list[Answer | ServingRequestError] = list(client.classify(images, version=version))
    except ServingRequestError as exc:
        if exc.retryable:
            raise ServingUnavailable(exc.message) from exc
        if len(images) == 1:
            answers = [exc]
        else:
            answers = [_classify(client, [image], version)[0][0] for image in images]
    return answers, (time.perf_counter() - started) * 1000 / max(len(images), 1)


def _done(answer: Answer, serving_ms: float) -> dict[str, object]:
    top = [{"label": k, "score": float(v)}
           for k, v in sorted(answer.scores.items(), key=lambda kv: kv[1], reverse=True)[:TOP_K]]
    return {"status": Status.DONE, "label": answer.label, "confidence": float(answer.confidence),
            "margin": margin(top), "serving_ms": serving_ms,
            "error": None, "top_k": top}


def _failed(error: str) -> dict[str, object]:
    return {"status": Status.FAILED, "error": error}


def _write(r: Connections, outcomes: list[tuple[str, dict[str, object]]]) -> dict[str, str]:
    """Writes each outcome unless the record has one already, in one transaction;
    returns the status written per record."""
    written: dict[str, str] = {}
    finished_at = utcnow()
    with r.db.session() as session:
        for prediction_id, values in outcomes:
            result = session.execute(update(Prediction).where(
                Prediction.id == prediction_id, Prediction.status.in_(UNFINISHED))
                .values(finished_at=finished_at, **values))
            if result.rowcount:
                written[prediction_id] = str(values["status"])
    for prediction_id, status in written.items():
        _notify(r.redis, prediction_id, status)
    return written


def _notify(redis: Redis, prediction_id: str, status: str) -> None:
    try:
        redis.publish(channel(prediction_id), json.dumps({"status": str(status)}))
    except RedisError as exc:  # pollers still see the database
        log.warning("cannot publish %s: %s", prediction_id, exc)


def _readable(exc: ServingRequestError) -> str:
    if exc.status_code == 400:
        return f"the model could not read this image ({exc.message})"
    return f"the model server refused it: {exc}"
