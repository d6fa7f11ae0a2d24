"""One validated settings object, read from the environment by every process.

Defaults run the whole system from a checkout with no configuration (SQLite
under var/, Redis and Serving on localhost); each can be overridden by the
environment variable of the same name. Production (`APP_ENV=production`)
refuses to start on the development secret.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core import credentials
from core.settings.monitoring import MonitoringSettings
from core.settings.readers import (
    ROOT,
    SettingsError,
    env_bool,
    env_fraction,
    env_int,
    env_path,
    env_secret,
)
from core.settings.rollout import RolloutSettings

#: Signs development sessions only; production must bring its own SECRET_KEY.
DEV_SECRET_KEY = "dev-only-not-secret"
MIN_SECRET_LENGTH = 32
#: What SECRET_KEY must hold at least, as estimated by `secret_bits`.
MIN_SECRET_BITS = 128
MAKE_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"


@dataclass(frozen=True)
class Settings:
    #: Read-only material beside the checkout (weights, the fruit photos).
    shared_dir: Path
    #: The folder-per-class photos the trainer learns from.
    dataset_dir: Path
    #: TF Serving's model_base_path parent: models live in <base>/<name>/<version>/.
    model_base_path: Path
    model_name: str
    #: TF Serving's REST address, for the workers and the admin's model page.
    serving_url: str
    redis_url: str
    #: SQLAlchemy URL: a SQLite file by default, postgresql+psycopg://... in production.
    database_url: str
    #: Uploaded images, stored by content hash.
    upload_dir: Path
    secret_key: str = field(repr=False)
    #: "production" turns on secure cookies and refuses a development secret.
    app_env: str
    #: Reverse proxies in front of the site (0: none); their X-Forwarded-For is
    #: then trusted, so rate limits count clients, not the proxy.
    trusted_proxies: int
    #: One image's largest size; bigger uploads get 413.
    max_image_file_bytes: int
    #: A whole request's largest size (a batch of files or a .zip).
    max_request_bytes: int
    #: Width x height above which an image is refused (a decompression bomb guard).
    max_image_pixels: int
    #: Images one batch may hold.
    max_batch_images: int
    #: The RQ queue of single uploads (page and API); batches have BATCH_QUEUE_NAME's.
    queue_name: str
    #: Retries of a failed job: Serving down or overloaded, or an unexpected error.
    job_retries: int
    #: Seconds a job may run before the worker kills it.
    job_timeout: int
    #: Images a batch job sends to Serving in one predict call.
    chunk_size: int
    #: The site's address: 127.0.0.1:PORT unless WEB_BIND says otherwise
    #: (0.0.0.0:8000 in a container).
    web_bind: str
    #: gunicorn's processes, and threads in each (a long poll holds a thread).
    web_workers: int
    web_threads: int
    #: RQ workers `make run` starts.
    workers: int
    #: The RQ queue of training runs; only `python -m trainer worker` reads it.
    training_queue: str
    #: Seconds a training run may take before the trainer worker kills it.
    training_timeout: int
    #: Seconds without a heartbeat (one every 5 s) before a running training run is dead.
    training_stale_after: int
    #: Base features of photos by content hash, so a run computes only what is new.
    feature_cache_dir: Path
    #: Photos from elsewhere on which pixels.tflite must answer as the SavedModel does.
    check_photos_dir: Path
    #: How much worse than the serving version a candidate may be and be promoted.
    gate_margin: float
    #: Calibrated top scores under this are shown as "not sure: X or Y?" and
    #: come first in the review queue. 0.7 catches 3 of the 4 wrong answers on
    #: web photos and flags 11% of the right ones (README, "Choosing the recipe").
    uncertain_below: float
    #: Where make run's embedded Redis keeps its append-only file.
    redis_data_dir: Path
    #: With both set, `db upgrade` makes this first administrator if there is none;
    #: ADMIN_PASSWORD alone is create-admin's password, not asked for.
    admin_username: str | None
    admin_password: str | None = field(repr=False)
    # --- retention: how long uploads are kept (core/deletion.py, worker/retention.py)
    #: Days an upload (its record, image and thumbnail) is kept before the workers
    #: purge it; 0 keeps everything.
    retention_days: int
    #: Reviewed records are what the next training run learns from: kept past
    #: retention_days unless this is false.
    retention_keep_reviewed: bool
    #: Seconds between two purges (one worker purges at a time, under a Redis lock).
    retention_interval: int
    # --- quotas and queues: what one caller may upload (frontend/quotas.py)
    # and the order workers take jobs in (core/lifecycle). Uploads are POST /upload,
    # /api/predictions and /api/batches; a caller is an address, or an API key
    # (X-API-Key, made with `flask create-api-key`) which has quotas of its own.
    #: Upload requests one address may make a minute, whatever they carry (60).
    upload_requests_per_minute: int
    #: Images one address may send without an API key, a batch costing its image
    #: count: 200 a minute and 1,000 an hour.
    anon_images_per_minute: int
    anon_images_per_hour: int
    #: One request's largest batch and body without an API key: 200 images and
    #: 50 MB (MAX_BATCH_IMAGES and MAX_REQUEST_BYTES with one, if those are smaller).
    anon_max_batch_images: int
    anon_max_request_bytes: int
    #: A new API key's quotas unless create-api-key says otherwise: 10,000 images
    #: an hour, 100,000 a day.
    api_key_images_per_hour: int
    api_key_images_per_day: int
    #: The RQ queue of batch chunks; workers take QUEUE_NAME's single uploads first.
    batch_queue_name: str
    rollout: RolloutSettings
    monitoring: MonitoringSettings

    @classmethod
    def from_env(cls) -> Settings:
        shared = env_path("SHARED_DIR", "../shared")
        var = ROOT / "var"
        settings = cls(
            shared_dir=shared,
            dataset_dir=env_path("DATASET_DIR", "dataset"),
            model_base_path=env_path("MODEL_BASE_PATH", "models"),
            model_name=os.environ.get("MODEL_NAME") or "classifier",
            serving_url=os.environ.get("SERVING_URL") or "http://127.0.0.1:8501",
            redis_url=credentials.with_password(
                os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
                env_secret("REDIS_PASSWORD")),
            database_url=credentials.with_password(
                os.environ.get("DATABASE_URL") or f"sqlite:///{var / 'app.db'}",
                env_secret("POSTGRES_PASSWORD")),
            upload_dir=env_path("UPLOAD_DIR", str(var / "uploads")),
            secret_key=env_secret("SECRET_KEY") or DEV_SECRET_KEY,
            app_env=(os.environ.get("APP_ENV") or "development").lower(),
            trusted_proxies=env_int("TRUSTED_PROXIES", 0, minimum=0),
            max_image_file_bytes=env_int("MAX_IMAGE_BYTES", 10 * 2**20),
            max_request_bytes=env_int("MAX_REQUEST_BYTES", 200 * 2**20),
            max_image_pixels=env_int("MAX_IMAGE_PIXELS", 40_000_000),
            max_batch_images=env_int("MAX_BATCH_IMAGES", 2000),
            queue_name=os.environ.get("QUEUE_NAME") or "predictions",
            job_retries=env_int("JOB_RETRIES", 5, minimum=0),
            job_timeout=env_int("JOB_TIMEOUT", 120),
            chunk_size=env_int("CHUNK_SIZE", 16),
            web_bind=os.environ.get("WEB_BIND") or f"127.0.0.1:{env_int('PORT', 8000)}",
            web_workers=env_int("WEB_WORKERS", 2),
            web_threads=env_int("WEB_THREADS", 16),
            workers=env_int("WORKERS", 2),
            training_queue=os.environ.get("TRAINING_QUEUE") or "training",
            training_timeout=env_int("TRAINING_TIMEOUT", 3600),
            training_stale_after=env_int("TRAINING_STALE_AFTER", 60, minimum=15),
            feature_cache_dir=env_path("FEATURE_CACHE_DIR", str(var / "features")),
            check_photos_dir=env_path("CHECK_PHOTOS_DIR", str(shared / "datasets" / "webstock")),
            gate_margin=env_fraction("GATE_MARGIN", 0.02),
            uncertain_below=env_fraction("UNCERTAIN_BELOW", 0.7),
            redis_data_dir=env_path("REDIS_DATA_DIR", str(var / "redis")),
            admin_username=os.environ.get("ADMIN_USERNAME") or None,
            admin_password=env_secret("ADMIN_PASSWORD"),
            # retention
            retention_days=env_int("RETENTION_DAYS", 30, minimum=0),
            retention_keep_reviewed=env_bool("RETENTION_KEEP_REVIEWED", True),
            retention_interval=env_int("RETENTION_INTERVAL", 3600),
            # quotas and queues
            upload_requests_per_minute=env_int("UPLOAD_REQUESTS_PER_MINUTE", 60),
            anon_images_per_minute=env_int("ANON_IMAGES_PER_MINUTE", 200),
            anon_images_per_hour=env_int("ANON_IMAGES_PER_HOUR", 1000),
            anon_max_batch_images=env_int("ANON_MAX_BATCH_IMAGES", 200),
            anon_max_request_bytes=env_int("ANON_MAX_REQUEST_BYTES", 50 * 2**20),
            api_key_images_per_hour=env_int("API_KEY_IMAGES_PER_HOUR", 10_000),
            api_key_images_per_day=env_int("API_KEY_IMAGES_PER_DAY", 100_000),
            batch_queue_name=os.environ.get("BATCH_QUEUE_NAME") or "predictions-batch",
            rollout=RolloutSettings.from_env(),
            monitoring=MonitoringSettings.from_env(),
        )
        settings.check()
        return settings

    @property
    def production(self) -> bool:
        return self.app_env == "production"

    def check(self) -> None:
        if self.app_env not in ("development", "production"):
            raise SettingsError(f"APP_ENV must be development or production, not {self.app_env!r}")
        if self.production and (self.secret_key == DEV_SECRET_KEY
                                or len(self.secret_key) < MIN_SECRET_LENGTH):
            raise SettingsError(
                f"APP_ENV=production needs SECRET_KEY set to a random value of at least "
                f"{MIN_SECRET_LENGTH} characters, e.g. {MAKE_SECRET}")
        if self.production and (bits := credentials.secret_bits(self.secret_key)) < MIN_SECRET_BITS:
            raise SettingsError(
                f"SECRET_KEY is too predictable for APP_ENV=production (about {bits:.0f} bits "
                f"of randomness, {MIN_SECRET_BITS} needed: no repeated characters, words or "
                f"runs); make one with {MAKE_SECRET}")
        if self.batch_queue_name == self.queue_name:  # quotas and queues
            raise SettingsError("BATCH_QUEUE_NAME must differ from QUEUE_NAME: single uploads "
                                "wait behind no batch only on a queue of their own")

    def check_site_host(self, host: str) -> None:
        """Refuses to serve the site on `host` with the development key, unless only
        this machine can reach it: anyone who reaches the site could sign a session
        cookie with the published key and be an administrator. Only the site's
        start (gunicorn.conf.py) asks this; workers and the trainer share the
        environment but listen on nothing, so Settings.check leaves it out."""
        if self.secret_key == DEV_SECRET_KEY and not credentials.loopback(host):
            raise SettingsError(
                f"the site would listen on {host or 'every address'} with the development "
                f"SECRET_KEY, which anyone can read in core/settings.py; set SECRET_KEY "
                f"(make one with {MAKE_SECRET}) or bind 127.0.0.1")

    @property
    def model_dir(self) -> Path:
        """The served model's folder: TF Serving's base path for MODEL_NAME."""
        return self.model_base_path / self.model_name

    @property
    def fruits_dir(self) -> Path:
        """The reference data set: 5 classes of real fruit photos."""
        return self.shared_dir / "datasets" / "fruits"

    @property
    def webstock_dir(self) -> Path:
        """Web and stock photos of 3 of the fruits: photos from elsewhere, never trained on
        by default."""
        return self.shared_dir / "datasets" / "webstock"


def get_settings() -> Settings:
    return Settings.from_env()
