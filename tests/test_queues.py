"""Two queues: a single upload is answered while a big batch's chunks still wait,
and the batch still finishes (core/lifecycle/connections.py).

The order is the real one: the site and a real `python -m worker` process on
the test's Redis, the embedded Serving on the shapes model. The sweep and the
administrator's retry are checked to put each record's job back on its own
queue.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from redis import Redis
from rq.job import Job
from sqlalchemy import func, select

from core.db import Prediction, Status
from core.lifecycle.connections import Connections
from core.settings import get_settings
from tests.factories import (
    add_batch,
    add_prediction,
    part,
    photo_bytes,
    session,
    stored_prediction,
    wait_until,
)
from tests.web_fixtures import csrf_token
from worker.sweeper import sweep

CHUNK_SIZE = 2
CHUNKS = 40
SINGLES, BATCHES = "predictions", "predictions-batch"


@pytest.fixture
def env(env, monkeypatch):
    monkeypatch.setenv("CHUNK_SIZE", str(CHUNK_SIZE))
    return env | {"CHUNK_SIZE": str(CHUNK_SIZE)}


def statuses(env, batch_id: str) -> dict[str, int]:
    with session(env["DATABASE_URL"]) as reading:
        found = dict(reading.execute(select(Prediction.status, func.count())
                                     .where(Prediction.batch_id == batch_id)
                                     .group_by(Prediction.status)).all())
    return {status: found.get(status.value, 0) for status in Status}


# The order does not depend on the database: one is enough for the slowest test here.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_single_upload_is_answered_while_a_big_batch_still_waits_and_the_batch_finishes(
        client, env, serving, worker_process):
    redis = Redis.from_url(env["REDIS_URL"])
    files = [part(photo_bytes("circle", seed), f"c{seed}.jpg")
             for seed in range(CHUNK_SIZE * CHUNKS)]
    started = time.monotonic()
    batch = client.post("/api/batches", data={"images": files}).json
    assert batch["total"] == CHUNK_SIZE * CHUNKS, batch
    # The worker is busy with the batch when the single upload comes.
    wait_until(lambda: statuses(env, batch["id"])[Status.DONE] >= CHUNK_SIZE, 60,
               "the batch's first chunk")
    behind = redis.llen(f"rq:queue:{BATCHES}")
    sent = time.monotonic()
    single = client.post("/api/predictions", data={"image": part(photo_bytes("square", 3),
                                                                 "one.jpg")}).json
    answer = client.get(f"{single['url']}?wait=30").json
    answered = time.monotonic()
    assert answer["status"] == "done", answer
    left = redis.llen(f"rq:queue:{BATCHES}")
    at_answer = statuses(env, batch["id"])
    assert left >= CHUNKS // 2, f"only {left} of {CHUNKS} chunks still queued"
    assert at_answer[Status.DONE] < CHUNK_SIZE * CHUNKS // 2, at_answer

    wait_until(lambda: statuses(env, batch["id"])[Status.DONE] == CHUNK_SIZE * CHUNKS, 180,
               "the whole batch", detail=lambda: str(statuses(env, batch["id"])))
    finished = time.monotonic()
    with session(env["DATABASE_URL"]) as reading:
        rows = list(reading.scalars(select(Prediction)))
    assert len(rows) == CHUNK_SIZE * CHUNKS + 1
    assert {(p.status, p.attempts) for p in rows} == {(Status.DONE, 1)}, "each done once"
    print(f"\n{CHUNKS} chunks of {CHUNK_SIZE}: the single upload, sent with {behind} chunks "
          f"queued, was answered in {answered - sent:.2f} s with {left} still queued "
          f"({at_answer[Status.DONE]} of {CHUNK_SIZE * CHUNKS} images done); the batch "
          f"finished {finished - started:.1f} s after it was sent")


def queued(redis: Redis, name: str) -> list[str]:
    return [job.decode() for job in redis.lrange(f"rq:queue:{name}", 0, -1)]


def test_the_sweep_puts_a_lost_batch_job_on_the_batch_queue_and_a_single_on_the_singles(
        db, store, env):
    batch, _ = add_batch(db, store, [0])  # and one record done already
    in_batch = add_prediction(db, store, 1, status=Status.QUEUED, label=None,
                              batch_id=batch, source="batch", job_id="predict-lost-1")
    alone = add_prediction(db, store, 2, status=Status.QUEUED, label=None,
                           job_id="predict-lost-2")
    unqueued = add_prediction(db, store, 3, status=Status.QUEUED, label=None, batch_id=batch,
                              source="batch", job_id=None)  # Redis was down at its upload
    conns = Connections.from_settings(get_settings())
    try:
        assert sweep(conns, grace=timedelta(0)) == {"enqueued": 3, "failed": 0}
        redis = conns.redis
        assert queued(redis, SINGLES) == [f"predict-{alone}"]
        assert sorted(queued(redis, BATCHES)) == sorted([f"predict-{in_batch}",
                                                         f"predict-{unqueued}"])
        for pid in (in_batch, alone, unqueued):
            assert stored_prediction(db, pid).job_id == f"predict-{pid}"
        # Their jobs are alive now, on either queue: a second sweep leaves them alone.
        assert sweep(conns, grace=timedelta(0)) == {"enqueued": 0, "failed": 0}
    finally:
        conns.close()


def test_an_admin_retry_puts_each_failed_record_back_on_its_own_queue(
        admin_client, db, store, env):
    batch, _ = add_batch(db, store, [0])  # and one record done already
    in_batch = [add_prediction(db, store, seed, status=Status.FAILED, label=None,
                               batch_id=batch, source="batch", error="lost")
                for seed in (1, 2)]
    alone = add_prediction(db, store, 3, status=Status.FAILED, label=None, error="lost")
    token = csrf_token(admin_client, "/admin/?status=failed")
    answer = admin_client.post("/admin/records/retry-failed?status=failed",
                               data={"csrf_token": token}, follow_redirects=True)
    assert "3 failed records queued again" in answer.get_data(as_text=True)
    redis = Redis.from_url(env["REDIS_URL"])
    [single_job] = queued(redis, SINGLES)
    assert Job.fetch(single_job, connection=redis).args == ([alone],)
    assert stored_prediction(db, alone).job_id == single_job
    # Chunked by CHUNK_SIZE, a chunk mixing both kinds split in two jobs.
    on_batch_queue = {pid: job for job in queued(redis, BATCHES)
                      for pid in Job.fetch(job, connection=redis).args[0]}
    assert sorted(on_batch_queue) == sorted(in_batch)
    for pid, job in on_batch_queue.items():
        assert stored_prediction(db, pid).job_id == job
    assert {stored_prediction(db, pid).status for pid in [alone, *in_batch]} == {Status.QUEUED}
