"""Settings of what watches the system: drift alerts, Prometheus metrics and the
webhook that receives events."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from core.settings.readers import SettingsError, env_int, env_number, env_secret, env_text


@dataclass(frozen=True)
class MonitoringSettings:
    #: Population stability index of recent predictions against the version's
    #: validation split above which the back office raises a drift alert
    #: (0.1 is commonly read as a shift worth a look, 0.25 as a large one).
    drift_threshold: float
    #: Hours of recent predictions compared, and how many they must be at least.
    drift_window_hours: int
    drift_min_predictions: int
    #: Seconds between two drift checks by the workers (one alert per version and
    #: window at most).
    drift_interval: int
    #: A worker's Prometheus port (0: none); `make run`'s workers take this and the
    #: ports after it.
    worker_metrics_port: int
    #: With it set, /metrics asks for `Authorization: Bearer <token>`.
    metrics_token: str | None = field(repr=False)
    #: Receives signed JSON events (training run finished, rollback, drift alert).
    webhook_url: str | None
    #: Signs them (HMAC-SHA256); needed whenever webhook_url is set.
    webhook_secret: str | None = field(repr=False)
    #: Seconds one delivery may take.
    webhook_timeout: int

    @classmethod
    def from_env(cls) -> MonitoringSettings:
        settings = cls(
            drift_threshold=env_number("DRIFT_THRESHOLD", 0.25),
            drift_window_hours=env_int("DRIFT_WINDOW_HOURS", 24),
            drift_min_predictions=env_int("DRIFT_MIN_PREDICTIONS", 100),
            drift_interval=env_int("DRIFT_CHECK_INTERVAL", 300),
            worker_metrics_port=env_int("WORKER_METRICS_PORT", 0, minimum=0),
            metrics_token=env_secret("METRICS_TOKEN"),
            webhook_url=env_text("WEBHOOK_URL"),
            webhook_secret=env_secret("WEBHOOK_SECRET"),
            webhook_timeout=env_int("WEBHOOK_TIMEOUT", 5),
        )
        settings.check()
        return settings

    def check(self) -> None:
        if self.webhook_url is None:
            return
        if urlsplit(self.webhook_url).scheme not in ("http", "https"):
            raise SettingsError(f"WEBHOOK_URL must be an http:// or https:// URL, "
                                f"not {self.webhook_url!r}")
        if not self.webhook_secret:
            raise SettingsError("WEBHOOK_URL needs WEBHOOK_SECRET (or WEBHOOK_SECRET_FILE): "
                                "receivers tell our events from forged ones by its signature")
