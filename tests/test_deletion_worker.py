"""A worker meeting records deleted under it: one deleted while its job runs, one
while it waits in the queue. Neither crashes the worker nor comes back, and the
next upload is answered as usual."""

from __future__ import annotations

import threading

import pytest

from core import deletion
from core.lifecycle.connections import Connections
from core.settings import get_settings
from tests.factories import part, photo_bytes, stand_in_serving, stored_prediction, wait_until


@pytest.fixture
def held_serving(monkeypatch):
    """A Serving whose model is AVAILABLE and whose predict waits until released,
    then refuses the image: a job held RUNNING for as long as the test needs."""
    release = threading.Event()
    asked = threading.Event()

    def predict():
        asked.set()
        release.wait(60)
        return 400, {"error": "held and refused"}

    with stand_in_serving(predict) as url:
        monkeypatch.setenv("SERVING_URL", url)
        yield asked, release
        release.set()


def test_deleting_running_and_queued_records_does_not_upset_the_worker(
        request, env, held_serving, tmp_path):
    from frontend import create_app

    asked, release = held_serving
    client = create_app({"TESTING": True}).test_client()
    worker = request.getfixturevalue("worker_process")

    def upload(seed: int) -> str:
        response = client.post("/api/predictions",
                               data={"image": part(photo_bytes("circle", seed), "w.jpg")})
        assert response.status_code == 202
        return response.get_json()["id"]

    running = upload(20)
    assert asked.wait(60), "the worker never called Serving"
    assert stored_prediction(env["DATABASE_URL"], running).status == "running"
    queued = upload(21)  # behind the held job: one job at a time
    conns = Connections.from_settings(get_settings())
    try:
        deleted = deletion.delete_predictions(conns, [running, queued], reason="test",
                                              visitor=deletion.ANYONE)
    finally:
        conns.close()
    assert deleted.records == 2
    release.set()

    later = upload(22)
    wait_until(lambda: getattr(stored_prediction(env["DATABASE_URL"], later), "status", None)
               == "failed", 60, "the next upload's answer",
               detail=lambda: (tmp_path / "worker.log").read_text()[-3000:])
    assert "held and refused" in stored_prediction(env["DATABASE_URL"], later).error
    assert worker.poll() is None
    for prediction_id in (running, queued):  # not written back by the jobs that ran
        assert stored_prediction(env["DATABASE_URL"], prediction_id) is None
    log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in log, log[-3000:]
