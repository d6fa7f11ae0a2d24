"""Fixtures for the site, the queue and the workers: real Redis, real SQLite and
PostgreSQL databases, the embedded Serving on a small real model, and
`python -m worker` as a real child process.

Every test using `app` runs twice, once per database. Redis is the one on
127.0.0.1:6379 (TEST_REDIS_URL overrides it), flushed around each test, in a
database of each pytest-xdist worker's own: TEST_REDIS_DB (1 by default) plus
the worker's number, so 1-4 under `-n 4`; that range must stay clear of
HEALTH_REDIS_DB (test_compose.py's) and within Redis's 16 databases. PostgreSQL
is reached through TEST_POSTGRES_URL and each session (each worker) makes its own
database there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from redis import Redis
from sqlalchemy import delete
from werkzeug.security import generate_password_hash

from core import migrate
from core.db import AdminSession, ApiKey, ApiToken, Batch, Database, Prediction, TrainingRun, User
from core.rollout.records import RolloutEvent, RolloutRow
from core.settings import ROOT
from core.storage import ImageStore
from tests.factories import (
    SHAPES,
    constant_classifier,
    database,
    serve_every_version,
    session,
    stop,
    wait_until,
)
from tests.serving_process import ServingProcess, available_versions

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
#: The first of the web tests' Redis databases, one per xdist worker from here up.
REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "1"))
#: test_compose.py's worker health check registers a worker here, never flushed.
HEALTH_REDIS_DB = 14
REDIS_DATABASES = 16  # Redis's default `databases`
POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN_NAME, ADMIN_PASSWORD = "admin", "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def redis_db() -> int:
    """This worker's Redis database: REDIS_DB plus its xdist number (gw2: REDIS_DB + 2).
    Refuses a base that would put a worker past the last database or on
    HEALTH_REDIS_DB, rather than share a database another worker flushes."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    used = range(REDIS_DB, REDIS_DB + workers)
    if used.stop > REDIS_DATABASES or HEALTH_REDIS_DB in used:
        pytest.exit(f"TEST_REDIS_DB={REDIS_DB} with {workers} workers would use Redis databases "
                    f"{used.start}-{used.stop - 1}: they must be below {REDIS_DATABASES} and "
                    f"leave out {HEALTH_REDIS_DB} (test_compose.py's)")
    return REDIS_DB + index


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = f"{REDIS}/{redis_db()}"
    try:
        Redis.from_url(url, socket_connect_timeout=2).ping()
    except OSError as exc:
        pytest.exit(f"the tests need Redis at {url}: {exc}")
    return url


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A database of this session's own on the PostgreSQL server, dropped at the end."""
    name = f"test_web_{os.getpid()}"
    admin = psycopg.connect(POSTGRES, autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.execute(f'CREATE DATABASE "{name}"')
    url = re.sub(r"^postgresql(\+psycopg)?://", "postgresql+psycopg://",
                 POSTGRES.rsplit("/", 1)[0] + f"/{name}")
    migrate.upgrade(url)
    yield url
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'app.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each database in turn, emptied before the test."""
    url = request.getfixturevalue(f"{request.param}_url")
    with session(url) as emptying:
        for table in (Prediction, Batch, ApiToken, AdminSession, ApiKey, User, TrainingRun,
                      RolloutRow, RolloutEvent):
            emptying.execute(delete(table))
    yield url


@pytest.fixture
def env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        database_url: str, redis_url: str) -> dict[str, str]:
    """The environment of the site and of the worker processes the test starts.
    Serving is the embedded one on the shapes model for tests that ask for the
    `serving` fixture, and an address where nothing listens for the others."""
    Redis.from_url(redis_url).flushdb()
    serving_url = (request.getfixturevalue("shapes_server").url
                   if "serving" in request.fixturenames else "http://127.0.0.1:9")
    values = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "UPLOAD_DIR": str(tmp_path / "uploads"),
        "SERVING_URL": serving_url,
        "MODEL_NAME": "classifier",
        "MODEL_BASE_PATH": str(tmp_path / "models"),
        "JOB_RETRIES": "0",
        "APP_ENV": "development",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SECRET_KEY", raising=False)
    return values


@pytest.fixture
def db(env: dict[str, str]) -> Iterator[Database]:
    """The test's database, opened as the site opens it."""
    with database(env["DATABASE_URL"]) as opened:
        yield opened


@pytest.fixture
def store(env: dict[str, str]) -> ImageStore:
    """The image store the site and the workers of the test share."""
    return ImageStore(Path(env["UPLOAD_DIR"]))


@pytest.fixture
def app(env: dict[str, str]):
    from frontend import create_app

    app = create_app({"TESTING": True})
    yield app
    services = app.extensions["classifier"]
    services.db.dispose()
    services.redis.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def csrf_token(client, path: str) -> str:
    """The CSRF token a form on that page carries."""
    page = client.get(path)
    match = CSRF.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path} ({page.status_code})"
    return match.group(1)


@pytest.fixture
def admin_user(env: dict[str, str]) -> tuple[str, str]:
    """An administrator, added straight to the database and hashed with one PBKDF2
    round rather than create-admin's scrypt (0.3 s a test to make and check);
    the tests of create-admin run the command itself."""
    with session(env["DATABASE_URL"]) as adding:
        adding.add(User(username=ADMIN_NAME, password_hash=generate_password_hash(
            ADMIN_PASSWORD, "pbkdf2:sha256:1")))
    return ADMIN_NAME, ADMIN_PASSWORD


@pytest.fixture
def admin_client(client, admin_user):
    """A test client logged into the back office."""
    name, password = admin_user
    token = csrf_token(client, "/admin/login")
    response = client.post("/admin/login", data={"username": name, "password": password,
                                                 "csrf_token": token})
    assert response.status_code == 303, response.get_data(as_text=True)
    return client


@pytest.fixture(scope="session")
def shapes_server(tmp_path_factory: pytest.TempPathFactory, trained) -> Iterator[ServingProcess]:
    """The embedded Serving on the shapes model (circle, square, triangle) as `classifier`."""
    log = tmp_path_factory.mktemp("serving") / "serving.log"
    server = ServingProcess(["--model_name=classifier",
                             f"--model_base_path={trained.version_dir.parent}"], log).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rollout_versions(tmp_path_factory: pytest.TempPathFactory, trained) -> Iterator[ServingProcess]:
    """The embedded Serving with three versions loaded at once: 1 the shapes model,
    2 a deliberately worse one (it says "circle" to everything), 3 a copy of 1."""
    model_dir = tmp_path_factory.mktemp("rollout") / "classifier"
    shutil.copytree(trained.version_dir, model_dir / "1")
    constant_classifier(model_dir / "2", sorted(SHAPES), "circle")
    shutil.copytree(trained.version_dir, model_dir / "3")
    server = serve_every_version(model_dir, model_dir.parent / "serving.log")
    wait_until(lambda: available_versions(server.client("classifier")) == {1, 2, 3}, 120,
               "three versions loaded")
    yield server
    server.stop()


@pytest.fixture
def rollout_serving(rollout_versions: ServingProcess, env: dict[str, str],
                    monkeypatch: pytest.MonkeyPatch) -> ServingProcess:
    """The three versions are what this test's site and workers use (ask before `app`)."""
    monkeypatch.setenv("SERVING_URL", rollout_versions.url)
    env["SERVING_URL"] = rollout_versions.url
    return rollout_versions


@pytest.fixture
def serving(shapes_server: ServingProcess, env: dict[str, str]) -> ServingProcess:
    """The running Serving the site and the workers of this test use (see `env`)."""
    return shapes_server


def run_worker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m worker --burst`: works off the queue and exits."""
    result = subprocess.run([sys.executable, "-m", "worker", "--burst", *args], cwd=ROOT,
                            env=os.environ.copy(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture
def worker_process(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A long-running worker (with RQ's scheduler, for delayed retries, and the sweeper)."""
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "worker", "--sweep-interval", "1"],
                               cwd=ROOT, env=os.environ.copy(), stdout=log,
                               stderr=subprocess.STDOUT)
    yield process
    stop(process)
    log.close()



@dataclass
class Loop:
    """The improvement loop's own processes for one test (see `loop`)."""

    model_dir: Path
    serving: ServingProcess
    trainer: subprocess.Popen
    trainer_log: Path

    def log(self) -> str:
        return self.trainer_log.read_text(errors="replace")[-4000:]


@pytest.fixture
def loop(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         tmp_path_factory: pytest.TempPathFactory, dataset_copy: Path,
         trained) -> Iterator[Loop]:
    """A model folder of the test's own serving the shapes model as version 1,
    polled every half second by an embedded Serving, and `python -m trainer
    worker` learning from `dataset_copy`, which the test may change before a
    run. The feature cache is shared by the tests of a worker, as it is by the
    runs of one installation. Ask for it before `app` (or `site`), which must
    see its settings."""
    model_dir = Path(env["MODEL_BASE_PATH"]) / "classifier"
    shutil.copytree(trained.version_dir, model_dir / "1")
    shutil.copytree(trained.report_dir, model_dir / "reports" / "1")
    server = ServingProcess(["--model_name=classifier", f"--model_base_path={model_dir}",
                             "--file_system_poll_wait_seconds=0.5"],
                            tmp_path / "loop-serving.log").start()
    values = {"SERVING_URL": server.url, "DATASET_DIR": str(dataset_copy),
              "FEATURE_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "features"),
              "TRAINING_STALE_AFTER": "15"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    env.update(values)
    log = tmp_path / "trainer-worker.log"
    with log.open("w") as out:
        trainer = subprocess.Popen([sys.executable, "-m", "trainer", "worker"], cwd=ROOT,
                                   env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT)
    yield Loop(model_dir, server, trainer, log)
    stop(trainer, 60)
    server.stop()
