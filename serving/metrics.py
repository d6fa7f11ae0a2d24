"""Prometheus metrics under TF Serving's `:tensorflow:serving:` prefix.

Close to TF Serving's, not identical: seconds rather than microseconds, a
`_total` counter suffix (prometheus_client's rule), version labels, and two
metrics of our own (available versions, their backends, load outcomes).

Each server has its own registry, so several can live in one process. Labels
carry the model and version, so a rollout shows up as traffic moving from
one version to the next.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # TF Serving exports no *_created series

PREFIX = ":tensorflow:serving:"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            PREFIX + "request_count", "REST requests answered, by outcome (error code).",
            ["model_name", "version", "API", "status"], registry=self.registry)
        self.latency = Histogram(
            PREFIX + "request_latency", "Seconds from request received to answer written.",
            ["model_name", "version", "API"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram(
            PREFIX + "batching_session:processed_batch_size",
            "Examples per model call after dynamic batching.",
            ["model_name", "version", "signature"], buckets=BATCH_BUCKETS,
            registry=self.registry)
        self.queuing_latency = Histogram(
            PREFIX + "batching_session:queuing_latency",
            "Seconds a request waited for its batch to start.",
            ["model_name", "version", "signature"], buckets=LATENCY_BUCKETS,
            registry=self.registry)
        self.version_available = Gauge(
            PREFIX + "model_version_available", "1 while a version is AVAILABLE and routed to.",
            ["model_name", "version"], registry=self.registry)
        self.backend = Gauge(
            PREFIX + "model_version_backend",
            "1 for what runs each loaded version: saved_model, or litert (its pixels.tflite).",
            ["model_name", "version", "backend"], registry=self.registry)
        self.loads = Counter(
            PREFIX + "model_load_count", "Version loads attempted, by outcome.",
            ["model_name", "status"], registry=self.registry)

    def routed(self, model: str, version: int, backend: str, routed: bool) -> None:
        """A version starts or stops answering requests, run by `backend`."""
        self.version_available.labels(model, str(version)).set(int(routed))
        self.backend.labels(model, str(version), backend).set(int(routed))

    def request(self, model: str, version: str, api: str, status: str, seconds: float) -> None:
        self.requests.labels(model, version, api, status).inc()
        self.latency.labels(model, version, api).observe(seconds)

    def batch(self, labels: dict[str, str], size: int, waits: list[float]) -> None:
        key = (labels["model_name"], labels["version"], labels["signature"])
        self.batch_size.labels(*key).observe(size)
        histogram = self.queuing_latency.labels(*key)
        for wait in waits:
            histogram.observe(wait)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
