"""Upload -> Redis/RQ -> worker process -> Serving -> database, end to end,
and what happens when a part of that chain fails."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from PIL import Image
from redis import Redis
from rq.job import Job
from sqlalchemy import select

from core.db import Prediction
from core.lifecycle import jobs
from core.lifecycle.connections import queues as rq_queues
from core.settings import ROOT
from tests.factories import (
    SHAPES,
    database,
    encoded,
    part,
    photo_bytes,
    session,
    stand_in_serving,
    stored_prediction,
    wait_until,
)
from tests.web_fixtures import run_worker


def upload(client, data: bytes, name: str = "photo.jpg") -> dict:
    response = client.post("/api/predictions", data={"image": part(data, name)})
    assert response.status_code == 202, response.json
    return response.json


def record(env: dict[str, str], prediction_id: str) -> Prediction:
    return stored_prediction(env["DATABASE_URL"], prediction_id)


def test_an_uploaded_photo_is_classified_by_the_served_model(client, serving, trained):
    created = upload(client, photo_bytes("circle", 7))
    assert created["status"] == "queued"
    run_worker()
    body = client.get(created["url"]).json
    assert body["status"] == "done", body
    assert body["label"] == "circle"
    assert body["model_version"] == trained.version
    assert body["top_k"][0]["label"] == "circle"
    assert body["confidence"] == body["top_k"][0]["score"]
    assert sorted(t["label"] for t in body["top_k"]) == sorted(SHAPES)
    assert 0 < body["serving_ms"] < body["seconds"] * 1000
    page = client.get(created["page_url"]).get_data(as_text=True)
    assert "circle" in page and f"Model version {trained.version}" in page


def test_a_long_poll_answers_as_soon_as_the_worker_is_done(client, serving):
    created = upload(client, photo_bytes("square", 3))
    worker = subprocess.Popen([sys.executable, "-m", "worker", "--burst"], cwd=ROOT)
    try:
        started = time.monotonic()
        body = client.get(created["url"] + "?wait=25").json
        waited = time.monotonic() - started
    finally:
        worker.wait(60)
    assert body["status"] == "done" and body["label"] == "square"
    assert waited < 20  # answered on the worker's message, not at the deadline


def test_a_batch_goes_through_in_chunks_and_downloads_as_csv_and_json(
        client, serving, trained, monkeypatch):
    files = [part(photo_bytes(kind, seed), f"{kind}-{seed}.png")
             for seed in range(4) for kind in SHAPES]
    created = client.post("/api/batches", data={"images": files})
    assert created.status_code == 202, created.json
    batch = created.json
    assert batch["total"] == 12 and batch["rejected"] == []
    run_worker()
    state = client.get(batch["url"]).json
    assert state["complete"] and state["counts"]["done"] == 12
    assert sum(state["labels"].values()) == 12
    predictions = client.get(f"{batch['url']}/predictions").json["predictions"]
    right = sum(p["label"] == p["filename"].split("-")[0] for p in predictions)
    assert right >= 10, predictions  # the shapes model is nearly always right
    assert {p["model_version"] for p in predictions} == {trained.version}
    rows = list(csv.DictReader(io.StringIO(
        client.get(f"{batch['url']}/results.csv").get_data(as_text=True))))
    assert len(rows) == 12 and {r["status"] for r in rows} == {"done"}
    document = json.loads(client.get(f"{batch['url']}/results.json").get_data(as_text=True))
    assert len(document["predictions"]) == 12


def test_a_batch_sends_its_images_to_serving_in_chunks(client, serving, env):
    files = [part(photo_bytes("circle", seed), f"c{seed}.jpg") for seed in range(40)]
    batch = client.post("/api/batches", data={"images": files}).json
    with session(env["DATABASE_URL"]) as reading:
        job_ids = set(reading.scalars(select(Prediction.job_id)
                                      .where(Prediction.batch_id == batch["id"])))
    assert len(job_ids) == 3  # CHUNK_SIZE 16: 16 + 16 + 8


def test_an_image_serving_cannot_read_fails_alone_in_its_chunk(client, serving):
    one_bit = encoded(Image.new("1", (64, 64)), "BMP")  # Pillow reads it; TensorFlow's decoder not
    files = [part(photo_bytes("circle", 1), "good1.jpg"), part(one_bit, "bad.bmp"),
             part(photo_bytes("triangle", 2), "good2.jpg")]
    batch = client.post("/api/batches", data={"images": files}).json
    run_worker()
    by_name = {p["filename"]: p for p in
               client.get(f"{batch['url']}/predictions").json["predictions"]}
    assert by_name["good1.jpg"]["status"] == by_name["good2.jpg"]["status"] == "done"
    assert by_name["bad.bmp"]["status"] == "failed"
    assert "could not read this image" in by_name["bad.bmp"]["error"]


def test_a_job_that_runs_twice_writes_one_result(client, serving, env, redis_url):
    created = upload(client, photo_bytes("triangle", 5))
    run_worker()
    first = record(env, created["id"])
    queue = rq_queues(_settings(), Redis.from_url(redis_url))[0]  # the singles'
    queue.enqueue(jobs.TASK, [created["id"]], job_id="predict-again")  # as a retry would
    run_worker()
    again = record(env, created["id"])
    assert Job.fetch("predict-again", connection=queue.connection).return_value() == {
        "done": 0, "failed": 0, "skipped": 1}
    assert (again.finished_at, again.attempts, again.label) == (
        first.finished_at, first.attempts, first.label)


def test_serving_down_is_retried_then_failed_with_a_reason(client, env, monkeypatch):
    monkeypatch.setenv("JOB_RETRIES", "1")
    from frontend import create_app

    app = create_app({"TESTING": True})
    created = upload(app.test_client(), photo_bytes("circle", 9))
    worker = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT)
    try:
        wait_until(lambda: record(env, created["id"]).status == "failed", 60, "the failure")
    finally:
        worker.terminate()
        worker.wait(30)
    failed = record(env, created["id"])
    assert failed.attempts == 2
    assert "model server did not answer after 2 attempts" in failed.error
    assert "127.0.0.1:9" in failed.error


def test_uploads_accepted_while_redis_was_down_are_enqueued_by_the_sweeper(
        env, serving, monkeypatch):
    from frontend import create_app

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    created = upload(create_app({"TESTING": True}).test_client(), photo_bytes("square", 4))
    monkeypatch.setenv("REDIS_URL", env["REDIS_URL"])
    assert record(env, created["id"]).status == "queued"
    swept = subprocess.run([sys.executable, "-m", "worker", "sweep", "--grace", "0"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert "'enqueued': 1" in swept.stdout, swept.stderr
    run_worker()
    assert record(env, created["id"]).label == "square"


def test_a_record_whose_job_vanished_is_enqueued_again(client, serving, env, redis_url):
    created = upload(client, photo_bytes("triangle", 8))
    Job.fetch(jobs.job_id([created["id"]]), connection=Redis.from_url(redis_url)).delete()
    run_worker()
    assert record(env, created["id"]).status == "queued"  # nothing left to run it
    subprocess.run([sys.executable, "-m", "worker", "sweep", "--grace", "0"], cwd=ROOT,
                   check=True, capture_output=True, timeout=60)
    run_worker()
    assert record(env, created["id"]).label == "triangle"


@pytest.fixture
def slow_serving(monkeypatch) -> Iterator[str]:
    """A Serving whose status is fine but whose predict hangs for 10 s."""

    def predict():
        time.sleep(10)
        return 200, {"error": "too late"}

    with stand_in_serving(predict) as url:
        monkeypatch.setenv("SERVING_URL", url)
        yield url


def test_a_job_over_its_timeout_is_failed_with_a_reason(env, slow_serving, monkeypatch):
    monkeypatch.setenv("JOB_TIMEOUT", "2")
    from frontend import create_app

    created = upload(create_app({"TESTING": True}).test_client(), photo_bytes("circle", 2))
    run_worker()
    failed = record(env, created["id"])
    assert failed.status == "failed"
    assert failed.error == "classification took longer than 2 s"


def _settings():
    from core.settings import get_settings
    return get_settings()


def test_the_sweeper_never_reopens_a_record_finished_while_it_ran(client, env, redis_url):
    from sqlalchemy import update

    from core.lifecycle.requeue import claim, waiting_for
    from core.lifecycle.status import Status
    from worker import sweeper

    created = upload(client, photo_bytes("circle", 3))
    job_id = jobs.job_id([created["id"]])
    with database(env["DATABASE_URL"]) as db:
        with db.session() as finishing:  # its job finished it after the sweep read the rows
            finishing.execute(update(Prediction).where(Prediction.id == created["id"])
                              .values(status=Status.DONE, label="circle"))
        assert claim(db, [created["id"]], waiting_for([created["id"]], job_id), {}) == []
        assert sweeper._fail(db, [created["id"]], job_id) == 0
    after = record(env, created["id"])
    assert (after.status, after.label, after.job_id) == ("done", "circle", job_id)


def test_only_one_sweep_runs_at_a_time(env, redis_url):
    from core.lifecycle.connections import Connections
    from core.lifecycle.requeue import SWEEP_LOCK
    from core.settings import get_settings
    from worker import sweeper

    connection = Redis.from_url(redis_url)
    held = connection.lock(SWEEP_LOCK, timeout=60)
    assert held.acquire(blocking=False)
    try:
        swept = subprocess.run([sys.executable, "-m", "worker", "sweep", "--grace", "0"],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert "another sweep is running" in swept.stdout
        conns = Connections.from_settings(get_settings())
        assert sweeper.sweep(conns) is None
        conns.close()
    finally:
        held.release()
