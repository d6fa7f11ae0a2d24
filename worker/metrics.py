"""A worker's own Prometheus metrics: its jobs, the predictions it wrote by version
and role, the Serving calls and the shadow's agreement.

Kept in a registry of this process (not prometheus_client's global one), and
served on WORKER_METRICS_PORT by long-running workers only.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Counter("classifier_worker_jobs", "Prediction jobs run, by outcome", ["outcome"],
               registry=REGISTRY)
JOB_SECONDS = Histogram("classifier_worker_job_seconds", "Seconds one prediction job took",
                        registry=REGISTRY)
PREDICTIONS = Counter("classifier_worker_predictions", "Records written, by version, role "
                      "and status", ["version", "role", "status"], registry=REGISTRY)
SERVING_SECONDS = Histogram("classifier_worker_serving_seconds", "Seconds of Serving's call "
                            "per image, by version and role", ["version", "role"],
                            registry=REGISTRY)
SHADOW = Counter("classifier_worker_shadow", "Shadow answers, by whether they agreed with "
                 "the answer given", ["version", "agreed"], registry=REGISTRY)


def job_done(seconds: float, counts: dict[str, int]) -> None:
    JOB_SECONDS.observe(seconds)
    JOBS.labels("failed" if counts.get("failed") else "done").inc()


def answered(version: int, role: str, status: str, serving_seconds: float | None) -> None:
    PREDICTIONS.labels(str(version), role, status).inc()
    if serving_seconds is not None:
        SERVING_SECONDS.labels(str(version), role).observe(serving_seconds)


def shadow_compared(version: int, agreed: bool) -> None:
    SHADOW.labels(str(version), str(agreed).lower()).inc()
