"""GET /metrics: the site's figures for Prometheus, read at scrape time from the
database and Redis.

gunicorn runs several processes and a scrape reaches any one of them, so a
counter kept in a process would disagree from one scrape to the next; every
figure here is read when Prometheus asks, from what all processes share. Counts
of records are gauges: the retention purge deletes old records, and a counter
must never go down. Rollbacks are a counter: roll-out events are never deleted.
Whatever the workers count themselves (jobs, Serving calls) they export on
their own port (worker/metrics.py).

Each app has a registry of its own, not prometheus_client's global one, so two
apps in one process (the tests) never share a collector. A database or a Redis
that does not answer leaves its figures out of the scrape, which still answers
200 and says so in `classifier_metrics_source_up`.

With METRICS_TOKEN set, a scrape must send `Authorization: Bearer <token>`;
without it /metrics is open, and the proxy (docker/nginx) refuses it from outside.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from flask import Blueprint, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.db import Prediction, Source, utcnow
from core.lifecycle.connections import Connections
from core.lifecycle.status import Status
from core.rollout import drift, store
from core.rollout.records import RolloutEvent
from frontend.extensions import limiter
from frontend.services import services

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)
limiter.exempt(bp)  # Prometheus asks every few seconds, from one address

#: Recent answers: the latency quantiles and mean confidence look this far back.
WINDOW = timedelta(minutes=15)
QUANTILES = (0.5, 0.99)
#: The most recent answers of the window read at most, so a flood costs a bounded scrape.
WINDOW_ROWS = 20_000
#: Drift compares a day of answers with each version's validation split: measured
#: once a minute per process, not on every scrape.
DRIFT_SECONDS = 60.0
NONE = "none"  # the label of a record no version answered, or of a role not recorded


@bp.record_once
def _make_registry(state: BlueprintSetupState) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SiteCollector(state.app.extensions["classifier"]))
    state.app.extensions["metrics_registry"] = registry


@bp.get("/metrics")
def metrics():
    token = services().settings.monitoring.metrics_token
    if token and not bearer_matches(request.headers.get("Authorization", ""), token):
        response = jsonify(error="send Authorization: Bearer <METRICS_TOKEN> to read /metrics")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body = generate_latest(current_app.extensions["metrics_registry"])
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST,
                                   "Cache-Control": "no-store"})


def bearer_matches(header: str, token: str) -> bool:
    """Compared in constant time, so the answer's timing does not spell the token out."""
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class SiteCollector(Collector):
    def __init__(self, conns: Connections):
        self.conns = conns
        self._drift: tuple[float, list[tuple[str, str, float]]] | None = None

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("classifier_metrics_source_up",
                               "1 when this scrape could read the source, 0 when its "
                               "figures are left out", labels=["source"])
        found = self._read("database", lambda: list(self._from_database()))
        up.add_metric(["database"], 1 if found is not None else 0)
        yield from found or []
        found = self._read("redis", lambda: list(queue_depths(self.conns)))
        up.add_metric(["redis"], 1 if found is not None else 0)
        yield from found or []
        yield up

    def _read(self, source: str, read) -> list[Metric] | None:
        try:
            return read()
        except (SQLAlchemyError, RedisError) as exc:
            log.warning("/metrics: %s did not answer: %s: %s", source, type(exc).__name__, exc)
            return None

    def _from_database(self) -> Iterator[Metric]:
        now = utcnow()
        with self.conns.db.session() as session:
            yield from records(session)
            yield queue_wait(session, now)
            yield from recent_answers(session, now)
            yield from rollout(session)
            yield self._drift_psi(session)

    # --- drift: core/rollout/drift.py's index, per version that answered in its window ----

    def _drift_psi(self, session: Session) -> Metric:
        family = GaugeMetricFamily(
            "classifier_drift_psi", "Population stability index of a version's recent answers "
            "against its validation split, by kind (class_mix, confidence)",
            labels=["version", "kind"])
        if self._drift is None or time.monotonic() - self._drift[0] > DRIFT_SECONDS:
            values = []
            for found in drift.recent(session, self.conns.settings):
                for kind, value in (("class_mix", found.psi_class_mix),
                                    ("confidence", found.psi_confidence)):
                    if value is not None:
                        values.append((str(found.version), kind, value))
            self._drift = (time.monotonic(), values)
        for version, kind, value in self._drift[1]:
            family.add_metric([version, kind], value)
        return family


# --- figures of the whole table -----------------------------------------------------------

def records(session: Session) -> list[Metric]:
    """Uploads by source, records by status, predictions by version, role and status,
    and failures by version: one GROUP BY over the records."""
    uploads = GaugeMetricFamily("classifier_uploads", "Uploaded images stored, by source",
                                labels=["source"])
    statuses = GaugeMetricFamily("classifier_records", "Records stored, by status",
                                 labels=["status"])
    predictions = GaugeMetricFamily(
        "classifier_predictions", "Records stored that a version answered, by version, "
        "role (stable, canary, newest) and status", labels=["version", "role", "status"])
    failures = GaugeMetricFamily("classifier_failures", "Failed records stored, by the "
                                 "version that answered (none: no version did)",
                                 labels=["version"])
    by_source: dict[str, int] = dict.fromkeys(map(str, Source), 0)
    by_status: dict[str, int] = dict.fromkeys(map(str, Status), 0)
    by_answer: dict[tuple[str, str, str], int] = defaultdict(int)
    failed: dict[str, int] = defaultdict(int)
    rows = session.execute(
        select(Prediction.source, Prediction.status, Prediction.model_version,
               Prediction.model_role, func.count())
        .group_by(Prediction.source, Prediction.status, Prediction.model_version,
                  Prediction.model_role))
    for source, status, version, role, count in rows:
        by_source[source] = by_source.get(source, 0) + count
        by_status[status] = by_status.get(status, 0) + count
        if version is not None:
            by_answer[(str(version), role or NONE, status)] += count
        if status == Status.FAILED:
            failed[NONE if version is None else str(version)] += count
    for source, count in by_source.items():
        uploads.add_metric([source], count)
    for status, count in by_status.items():
        statuses.add_metric([status], count)
    for labels, count in sorted(by_answer.items()):
        predictions.add_metric(list(labels), count)
    for version, count in sorted(failed.items()):
        failures.add_metric([version], count)
    return [uploads, statuses, predictions, failures]


def queue_wait(session: Session, now: datetime) -> Metric:
    oldest = session.scalar(select(func.min(Prediction.created_at))
                            .where(Prediction.status == Status.QUEUED))
    family = GaugeMetricFamily("classifier_queue_wait_seconds",
                               "Age of the oldest record still queued (0: none waits)")
    family.add_metric([], max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
    return family


def queue_depths(conns: Connections) -> Iterator[Metric]:
    family = GaugeMetricFamily("classifier_queue_depth", "Jobs waiting in an RQ queue "
                               "(single uploads', batch chunks')", labels=["queue"])
    for queue in conns.queues:
        family.add_metric([queue.name], queue.count)
    yield family


# --- the last WINDOW of answers -------------------------------------------------------------

def recent_answers(session: Session, now: datetime) -> Iterator[Metric]:
    """Upload-to-result seconds and Serving's seconds as quantiles per version and
    role, and the mean confidence per version, of records created in the window."""
    rows = session.execute(
        select(Prediction.model_version, Prediction.model_role, Prediction.status,
               Prediction.created_at, Prediction.finished_at, Prediction.serving_ms,
               Prediction.confidence)
        .where(Prediction.created_at >= now - WINDOW, Prediction.finished_at.is_not(None),
               Prediction.model_version.is_not(None))
        .order_by(Prediction.created_at.desc()).limit(WINDOW_ROWS))
    latency: dict[tuple[str, str], list[float]] = defaultdict(list)
    serving: dict[tuple[str, str], list[float]] = defaultdict(list)
    confidence: dict[str, list[float]] = defaultdict(list)
    for version, role, status, created, finished, serving_ms, score in rows:
        key = (str(version), role or NONE)
        latency[key].append(max((finished - created).total_seconds(), 0.0))
        if serving_ms is not None:
            serving[key].append(serving_ms / 1000)
        if status == Status.DONE and score is not None:
            confidence[key[0]].append(score)
    minutes = int(WINDOW.total_seconds() // 60)
    yield _counted("classifier_recent_answers", f"Records answered of those created in the "
                   f"last {minutes} minutes, by version and role", latency)
    yield _quantiles("classifier_result_seconds", f"Seconds from upload to result, over the "
                     f"last {minutes} minutes", latency)
    yield _quantiles("classifier_serving_seconds", f"Seconds of the Serving call that "
                     f"answered, over the last {minutes} minutes", serving)
    mean = GaugeMetricFamily("classifier_confidence_mean", f"Mean top score of the answers of "
                             f"the last {minutes} minutes, by version", labels=["version"])
    for version, scores in sorted(confidence.items()):
        mean.add_metric([version], sum(scores) / len(scores))
    yield mean


def _counted(name: str, documentation: str,
             values: dict[tuple[str, str], list[float]]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=["version", "role"])
    for labels, found in sorted(values.items()):
        family.add_metric(list(labels), len(found))
    return family


def _quantiles(name: str, documentation: str,
               values: dict[tuple[str, str], list[float]]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=["version", "role", "quantile"])
    for labels, found in sorted(values.items()):
        ordered = sorted(found)
        for q in QUANTILES:
            family.add_metric([*labels, f"{q:g}"], quantile(ordered, q))
    return family


def quantile(ordered: list[float], q: float) -> float:
    """The nearest-rank quantile: a value that really occurred, never an interpolation."""
    rank = min(max(math.ceil(q * len(ordered)), 1), len(ordered))
    return ordered[rank - 1]


# --- the roll-out ---------------------------------------------------------------------------

def rollout(session: Session) -> Iterable[Metric]:
    state = store.load(session).state
    share = GaugeMetricFamily("classifier_canary_share",
                              "Share of predictions the canary answers")
    share.add_metric([], state.canary_share if state.canary is not None else 0.0)
    info = GaugeMetricFamily("classifier_rollout_info", "The roll-out state (always 1): mode, "
                             "and the stable, canary and shadow versions ('' for none)",
                             labels=["mode", "stable", "canary", "shadow"])
    info.add_metric([str(state.mode), *("" if v is None else str(v)
                                        for v in (state.stable, state.canary, state.shadow))], 1)
    rollbacks = CounterMetricFamily("classifier_rollbacks", "Canaries rolled back (rollout "
                                    "events of kind rollback)")
    rollbacks.add_metric([], session.scalar(select(func.count())
                                            .where(RolloutEvent.kind == "rollback")) or 0)
    return [share, info, rollbacks]
