"""Signed webhooks (core/webhooks.py): events queued on the prediction queue,
delivered by a real `python -m worker` to a real HTTP receiver on 127.0.0.1,
which checks the signature as a receiver would, with `verify`; a receiver that
answers 500 gets the event on RQ's retry; a finished training run notifies."""

from __future__ import annotations

import json
import logging
import time
from contextlib import closing
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from core import webhooks
from core.lifecycle import connections
from core.lifecycle.connections import Connections
from core.settings import Settings, SettingsError, get_settings
from tests.factories import add_training_run, database, webhook_receiver
from tests.web_fixtures import run_worker

ONE_DATABASE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
SECRET = "whsec-test-0f3c9a1e7b2d4c6a8e0f1a3b5c7d9e1f"


@pytest.fixture
def conns(env: dict[str, str]):
    """The connections a process with news holds (the guard's, the drift check's)."""
    opened = Connections.from_settings(get_settings())
    yield opened
    opened.close()


def configure(monkeypatch: pytest.MonkeyPatch, url: str, secret: str = SECRET) -> None:
    monkeypatch.setenv("WEBHOOK_URL", url)
    monkeypatch.setenv("WEBHOOK_SECRET", secret)


def queued(env: dict[str, str]) -> list[Job]:
    queue = Queue("predictions", connection=Redis.from_url(env["REDIS_URL"]))
    return queue.get_jobs()


def assert_signed(request: dict, secret: str = SECRET) -> None:
    headers = request["headers"]
    assert webhooks.verify(secret, headers["X-Classifier-Timestamp"], request["body"],
                           headers["X-Classifier-Signature"])


# --- signatures -------------------------------------------------------------------------------

def test_a_signature_verifies_only_with_its_secret_body_and_a_fresh_timestamp() -> None:
    body = b'{"id":"evt_1","event":"drift.alert","data":{}}'
    now = int(time.time())
    signature = webhooks.sign(SECRET, now, body)
    assert signature.startswith("sha256=") and len(signature) == len("sha256=") + 64
    assert webhooks.verify(SECRET, str(now), body, signature)
    assert webhooks.verify(SECRET, now, body.decode(), signature)  # str or bytes alike
    assert not webhooks.verify("another-secret", now, body, signature)
    assert not webhooks.verify(SECRET, now, body.replace(b"drift", b"drigt"), signature)
    assert not webhooks.verify(SECRET, now + 1, body, signature)  # the time is signed too
    for broken in (None, "", "sha256=", signature.upper(), signature[:-1]):
        assert not webhooks.verify(SECRET, now, body, broken)
    for timestamp in (None, "", "soon", "1e9"):
        assert not webhooks.verify(SECRET, timestamp, body, signature)
    assert not webhooks.verify("", now, body, webhooks.sign("", now, body))


def test_a_stale_timestamp_fails_even_with_a_right_signature() -> None:
    body = b'{"id":"evt_2"}'
    then = int(time.time()) - 301
    signature = webhooks.sign(SECRET, then, body)
    assert not webhooks.verify(SECRET, then, body, signature)
    assert webhooks.verify(SECRET, then, body, signature, tolerance=600)
    ahead = int(time.time()) + 301  # a clock ahead is as suspect as one behind
    assert not webhooks.verify(SECRET, ahead, body, webhooks.sign(SECRET, ahead, body))


# --- settings ---------------------------------------------------------------------------------

def test_settings_refuse_a_webhook_url_without_a_secret(monkeypatch) -> None:
    monkeypatch.setenv("WEBHOOK_URL", "https://hooks.example.com/classifier")
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("WEBHOOK_SECRET_FILE", raising=False)
    with pytest.raises(SettingsError, match="WEBHOOK_URL needs WEBHOOK_SECRET"):
        Settings.from_env()
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    monitoring = Settings.from_env().monitoring
    assert monitoring.webhook_url == "https://hooks.example.com/classifier"
    assert SECRET not in repr(monitoring)


@pytest.mark.parametrize("url", ["ftp://hooks.example.com/x", "file:///etc/passwd",
                                 "hooks.example.com/x", "javascript:alert(1)"])
def test_settings_refuse_a_webhook_url_that_is_not_http(monkeypatch, url) -> None:
    configure(monkeypatch, url)
    with pytest.raises(SettingsError, match="must be an http:// or https:// URL"):
        Settings.from_env()


# --- delivery ---------------------------------------------------------------------------------

@ONE_DATABASE
def test_without_a_url_nothing_is_enqueued(env, conns) -> None:
    assert conns.settings.monitoring.webhook_url is None
    webhooks.notify(conns, "drift.alert", {"version": 1})
    assert queued(env) == []


@ONE_DATABASE
def test_an_event_reaches_the_receiver_signed_through_a_worker(env, monkeypatch) -> None:
    with webhook_receiver() as receiver:
        configure(monkeypatch, receiver.url)
        with closing(Connections.from_settings(get_settings())) as conns:
            started = time.time()
            webhooks.notify(conns, "canary.rolled_back", {"version": 3, "stable": 2})
        [job] = queued(env)
        assert job.func_name == webhooks.TASK and job.retries_left == len(webhooks.RETRY_INTERVALS)
        assert SECRET not in json.dumps(job.args)  # the secret never travels through Redis
        assert receiver.received == []  # the caller did not wait for the receiver
        run_worker()
    [request] = receiver.received
    headers = request["headers"]
    assert request["path"] == "/hooks/classifier"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Classifier-Event"] == "canary.rolled_back"
    assert abs(int(headers["X-Classifier-Timestamp"]) - started) < 60
    assert_signed(request)
    assert not webhooks.verify("not-our-secret", headers["X-Classifier-Timestamp"],
                               request["body"], headers["X-Classifier-Signature"])
    event = json.loads(request["body"])
    assert set(event) == {"id", "event", "created_at", "data"}
    assert event["event"] == "canary.rolled_back" and event["id"].startswith("evt_")
    assert event["created_at"].endswith("+00:00")
    assert event["data"] == {"version": 3, "stable": 2}


@ONE_DATABASE
def test_a_receiver_answering_500_gets_the_event_on_the_retry(env, monkeypatch) -> None:
    with webhook_receiver([500]) as receiver:
        configure(monkeypatch, receiver.url)
        with closing(Connections.from_settings(get_settings())) as conns:
            webhooks.notify(conns, "drift.alert", {"version": 1, "psi_class_mix": 0.4})
            registry = ScheduledJobRegistry(queue=conns.queue)
            worked = run_worker()  # the first attempt: 500
            assert len(receiver.received) == 1, worked.stderr[-3000:]
            [job_id] = registry.get_job_ids()  # RQ's retry, due after the first interval
            due = registry.get_scheduled_time(job_id).timestamp()
            assert 0 < due - time.time() <= webhooks.RETRY_INTERVALS[0]
            # A burst worker enqueues the retries due by its start: wait for this one.
            time.sleep(max(due - time.time(), 0) + 0.5)
            run_worker()
            assert registry.get_job_ids() == []
            assert Job.fetch(job_id, connection=conns.redis).get_status() == "finished"
    first, second = receiver.received
    assert first["body"] == second["body"]  # the same event, the same id, once more
    assert_signed(second)
    assert receiver.events()[1]["data"]["psi_class_mix"] == 0.4


@ONE_DATABASE
def test_a_receiver_that_is_down_keeps_the_event_for_the_retries(env, monkeypatch) -> None:
    with webhook_receiver() as receiver:
        url = receiver.url  # nothing listens there once the block ends
    configure(monkeypatch, url)
    with closing(Connections.from_settings(get_settings())) as conns:
        webhooks.notify(conns, "drift.alert", {"version": 1})
        worked = run_worker()
        registry = ScheduledJobRegistry(queue=conns.queue)
        assert len(registry.get_job_ids()) == 1, worked.stderr[-3000:]
        [job_id] = registry.get_job_ids()
        job = Job.fetch(job_id, connection=conns.redis)
        assert job.retries_left == len(webhooks.RETRY_INTERVALS) - 1


def test_a_redis_outage_is_logged_and_never_raised(monkeypatch, caplog, tmp_path: Path) -> None:
    configure(monkeypatch, "http://127.0.0.1:9/hooks")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
    conns = Connections.from_settings(get_settings())
    with caplog.at_level(logging.WARNING, logger="core.webhooks"):
        webhooks.notify(conns, "training_run.finished", {"id": "r1"})
    assert "Redis is unreachable" in caplog.text
    conns.close()


# --- the events ---------------------------------------------------------------------------

@ONE_DATABASE
def test_a_finished_training_run_notifies_once(env, monkeypatch, tmp_path: Path) -> None:
    """The trainer worker's own job, in this process, on a run that fails at its
    first check (no base photos): the real ending path, without a training."""
    from trainer import runs

    with webhook_receiver() as receiver:
        configure(monkeypatch, receiver.url)
        monkeypatch.setenv("DATASET_DIR", str(tmp_path / "no-photos-here"))
        monkeypatch.setattr(connections, "_this_process", None)  # this test's settings
        with database(env["DATABASE_URL"]) as db:
            run_id = add_training_run(db, requested_by="alice")
        try:
            assert runs.execute(run_id) == "failed"
            assert runs.execute(run_id) == "not queued"  # no second end, no second event
        finally:
            connections.for_this_process().close()
        [job] = queued(env)
        run_worker()
    [request] = receiver.received
    assert request["headers"]["X-Classifier-Event"] == "training_run.finished"
    assert_signed(request)
    data = json.loads(request["body"])["data"]
    assert (data["id"], data["status"], data["requested_by"]) == (run_id, "failed", "alice")
    assert "does not exist" in data["message"] and data["finished_at"].endswith("Z")
    assert {"version", "gate_decision", "gate_reason", "started_at"} <= set(data)
