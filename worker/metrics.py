"""A worker's own Prometheus metrics: its jobs, the predictions it wrote by version
and role, the Serving calls and the shadow's agreement.

What only the process doing the work sees (a job's seconds, a Serving call's)
is counted here, in a registry of this process rather than prometheus_client's
global one, and served on the worker's metrics port (`serve`); figures all
processes share (records, queues, the roll-out) come from the site's /metrics
(frontend/metrics.py). Prometheus sums the workers' series itself.

Only long-running workers serve them, and only with jobs run in this process:
with --fork each job runs in a child whose counts end with it.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from core.settings import Settings

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
#: A job is one upload or a batch chunk; JOB_TIMEOUT (120 s by default) ends it.
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SERVING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

JOBS = Counter("classifier_worker_jobs", "Prediction jobs run, by outcome: failed when a "
               "record of it failed, skipped when it had nothing left to write, else done",
               ["outcome"], registry=REGISTRY)
JOB_SECONDS = Histogram("classifier_worker_job_seconds", "Seconds one prediction job took",
                        buckets=JOB_BUCKETS, registry=REGISTRY)
PREDICTIONS = Counter("classifier_worker_predictions", "Records written, by version, role "
                      "and status", ["version", "role", "status"], registry=REGISTRY)
SERVING_SECONDS = Histogram("classifier_worker_serving_seconds", "Seconds of the Serving call "
                            "that answered a record, by version and role",
                            ["version", "role"], buckets=SERVING_BUCKETS, registry=REGISTRY)
SHADOW = Counter("classifier_worker_shadow", "Shadow answers, by whether they agreed with "
                 "the answer given", ["version", "agreed"], registry=REGISTRY)


def job_done(seconds: float, counts: dict[str, int]) -> None:
    """`counts`: the job's records that were done, failed, or skipped (another run of
    the job, or the sweeper, had written them)."""
    JOB_SECONDS.observe(seconds)
    if counts.get("failed"):
        outcome = "failed"
    elif counts.get("done"):
        outcome = "done"
    else:
        outcome = "skipped"
    JOBS.labels(outcome).inc()


def answered(version: int, role: str, status: str, serving_seconds: float | None) -> None:
    PREDICTIONS.labels(str(version), str(role), str(status)).inc()
    if serving_seconds is not None:
        SERVING_SECONDS.labels(str(version), str(role)).observe(serving_seconds)


def shadow_compared(version: int, agreed: bool) -> None:
    SHADOW.labels(str(version), str(agreed).lower()).inc()


def serve(settings: Settings, port: int, *, fork: bool) -> bool:
    """Serves REGISTRY on `port`: on every address in production (Prometheus scrapes
    each worker container at its own address), on the loopback otherwise, where
    `make run`'s workers share the machine with anything else on the network.
    A port already taken is logged and the worker works on without metrics."""
    if fork:
        log.warning("worker metrics are off with --fork: each job's counts would end "
                    "with the child that ran it")
        return False
    host = "0.0.0.0" if settings.production else "127.0.0.1"
    try:
        start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        log.error("worker metrics: cannot listen on %s:%s (%s); working on without them",
                  host, port, exc)
        return False
    log.info("worker metrics on http://%s:%s/metrics", host, port)
    return True
