"""The improvement loop's training side, as the site sees it: starting runs
(the row and its RQ job on the training queue), reading them (with a dead
trainer worker's run reaped), cancelling them, promoting a candidate by hand,
and the models page that shows all of it.

No trainer runs here (another process's job): runs are written straight into
the database and model folders made on disk (tests/factories.py); Redis and
both databases are real.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy import select

from core import training
from core.db import TrainingRun, utcnow
from tests.factories import add_prediction, add_training_run, model_version_files

QUEUE_KEY = "rq:queue:training"


@pytest.fixture
def api(runner, admin_user, client):
    """A client whose requests carry an administrator's bearer token."""
    result = runner.invoke(args=["create-token", admin_user[0]])
    assert result.exit_code == 0, result.output
    headers = {"Authorization": f"Bearer {result.output.strip().splitlines()[-1]}"}

    class TokenClient:
        def post(self, path, **kwargs):
            return client.post(path, headers=headers, **kwargs)

        def get(self, path, **kwargs):
            return client.get(path, headers=headers, **kwargs)

    return TokenClient()


@pytest.fixture
def model(env: dict[str, str]) -> Path:
    return Path(env["MODEL_BASE_PATH"]) / env["MODEL_NAME"]


@pytest.fixture
def reviewed(db, store) -> str:
    """One reviewed record: what a run needs to learn from."""
    return add_prediction(db, store, 1, correct=False, true_label="pear", reviewed_at=utcnow(),
                          reviewed_by="admin")


def stored_run(db, run_id: str) -> TrainingRun:
    with db.session() as session:
        return session.get(TrainingRun, run_id)


def training_jobs(env) -> list[str]:
    return [j.decode() for j in Redis.from_url(env["REDIS_URL"]).lrange(QUEUE_KEY, 0, -1)]


# --- Starting a run -------------------------------------------------------------------------


def test_starting_a_run_stores_it_queued_and_enqueues_its_job(api, reviewed, db, env):
    response = api.post("/admin/api/training-runs")
    assert response.status_code == 202, response.json
    run_id = response.json["id"]
    assert response.headers["Location"] == f"/admin/api/training-runs/{run_id}"
    assert (response.json["status"], response.json["requested_by"]) == ("queued", "admin")
    run = stored_run(db, run_id)
    assert (run.status, run.active, run.requested_by) == ("queued", True, "admin")
    assert training_jobs(env) == [training.job_id(run_id)]
    job = Job.fetch(training.job_id(run_id), connection=Redis.from_url(env["REDIS_URL"]))
    assert job.func_name == training.TASK == "trainer.runs.execute"
    assert job.args == (run_id,) and job.kwargs == {}
    assert job.timeout == 3600 and job.result_ttl == 60
    assert job.retries_left is None


def test_a_second_run_while_one_is_active_answers_409(api, reviewed, db, env):
    first = api.post("/admin/api/training-runs").json["id"]
    second = api.post("/admin/api/training-runs")
    assert second.status_code == 409
    assert f"run {first} is queued already" in second.json["error"]
    with db.session() as session:
        assert len(session.scalars(select(TrainingRun)).all()) == 1
    assert training_jobs(env) == [training.job_id(first)]


def test_the_database_refuses_a_second_active_run_the_pre_check_missed(
        api, reviewed, db, env, monkeypatch):
    add_training_run(db, status="running", heartbeat_at=utcnow())
    monkeypatch.setattr(training, "active_run", lambda session: None)  # two clicks at once
    response = api.post("/admin/api/training-runs")
    assert response.status_code == 409
    assert "another training run started just now" in response.json["error"]
    assert training_jobs(env) == []


def test_a_run_without_reviewed_records_answers_400(api, db, store, env):
    add_prediction(db, store, 1)  # answered, not reviewed
    response = api.post("/admin/api/training-runs")
    assert response.status_code == 400
    assert "review some records first" in response.json["error"]
    with db.session() as session:
        assert session.scalars(select(TrainingRun)).all() == []
    assert training_jobs(env) == []


def test_a_run_that_cannot_be_queued_is_failed_and_blocks_nothing(api, reviewed, db, app,
                                                                   monkeypatch):
    services = app.extensions["classifier"]
    working = services.redis
    monkeypatch.setattr(services, "redis", Redis(port=9, socket_connect_timeout=0.5))
    response = api.post("/admin/api/training-runs")
    assert response.status_code == 503
    assert "training queue (Redis) is unreachable" in response.json["error"]
    with db.session() as session:
        run = session.scalar(select(TrainingRun))
        assert (run.status, run.active) == ("failed", None)
        assert "could not be queued" in run.message
    monkeypatch.setattr(services, "redis", working)
    assert api.post("/admin/api/training-runs").status_code == 202


def test_a_session_starts_a_run_only_with_the_pages_csrf_header(admin_client, reviewed, env):
    assert admin_client.post("/admin/api/training-runs").status_code == 400
    assert training_jobs(env) == []
    html = admin_client.get("/admin/models").get_data(as_text=True)
    header = html.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    response = admin_client.post("/admin/api/training-runs", headers={"X-CSRFToken": header})
    assert response.status_code == 202, response.json


def test_anonymous_users_cannot_start_or_read_runs(client, reviewed, env):
    assert client.post("/admin/api/training-runs").status_code == 401
    assert client.get("/admin/api/training-runs").status_code == 401
    assert training_jobs(env) == []


# --- Reading runs ---------------------------------------------------------------------------


def test_runs_are_listed_newest_first_with_their_fields(api, db):
    now = utcnow()
    old = add_training_run(db, status="promoted", created_at=now - timedelta(hours=2),
                           version=4, base_images=600, reviewed_images=12, message="better",
                           gate={"decision": "promoted"}, finished_at=now - timedelta(hours=1))
    new = add_training_run(db, status="running", created_at=now, phase="features",
                           progress=0.25, eta_seconds=80.0, heartbeat_at=now)
    runs = api.get("/admin/api/training-runs").json["runs"]
    assert [r["id"] for r in runs] == [new, old]
    assert list(runs[0]) == ["id", "status", "phase", "progress", "eta_seconds", "version",
                             "message", "gate", "base_images", "reviewed_images",
                             "requested_by", "created_at", "started_at", "finished_at",
                             "cancel_requested"]
    one = api.get(f"/admin/api/training-runs/{old}").json
    assert (one["status"], one["version"], one["gate"], one["reviewed_images"]) == (
        "promoted", 4, {"decision": "promoted"}, 12)
    assert one["finished_at"].endswith("Z")
    assert runs[0]["eta_seconds"] == 80.0 and runs[0]["phase"] == "features"
    missing = api.get("/admin/api/training-runs/nosuchrun")
    assert missing.status_code == 404 and "nosuchrun" in missing.json["error"]


def test_a_run_whose_worker_died_is_reaped_as_failed_and_its_files_removed(api, db, model):
    served = model_version_files(model, 6, metrics={"class_names": ["a"]})
    candidate = model_version_files(model, 7, where="candidate", metrics={"class_names": ["a"]})
    staging = model / ".staging-7-4242"
    staging.mkdir()
    run_id = add_training_run(db, status="running", version=7,
                              heartbeat_at=utcnow() - timedelta(minutes=5))
    alive = add_training_run(db, status="cancelled", version=None)  # finished: left alone
    body = api.get(f"/admin/api/training-runs/{run_id}").json
    assert body["status"] == "failed"
    assert "trainer worker stopped mid-run" in body["message"]
    assert stored_run(db, run_id).active is None
    assert not candidate.exists() and not staging.exists()
    assert not (model / "reports" / "7").exists()
    assert served.exists() and (model / "reports" / "6" / "metrics.json").exists()
    assert stored_run(db, alive).status == "cancelled"


def test_a_running_run_with_a_fresh_heartbeat_is_not_reaped(api, db):
    run_id = add_training_run(db, status="running", heartbeat_at=utcnow())
    assert api.get("/admin/api/training-runs").json["runs"][0]["status"] == "running"
    assert stored_run(db, run_id).active is True


# --- Cancelling -----------------------------------------------------------------------------


def test_cancelling_a_queued_run_takes_its_job_off_the_queue(api, reviewed, db, env):
    run_id = api.post("/admin/api/training-runs").json["id"]
    response = api.post(f"/admin/api/training-runs/{run_id}/cancel")
    assert response.status_code == 200
    assert response.json["status"] == "cancelled"
    run = stored_run(db, run_id)
    assert (run.status, run.active) == ("cancelled", None)
    assert training_jobs(env) == []
    with pytest.raises(NoSuchJobError):
        Job.fetch(training.job_id(run_id), connection=Redis.from_url(env["REDIS_URL"]))
    assert api.post("/admin/api/training-runs").status_code == 202  # no longer blocks


def test_cancelling_a_running_run_asks_its_worker_to_stop(api, db):
    run_id = add_training_run(db, status="running", heartbeat_at=utcnow())
    response = api.post(f"/admin/api/training-runs/{run_id}/cancel")
    assert response.status_code == 200
    assert (response.json["status"], response.json["cancel_requested"]) == ("running", True)
    assert stored_run(db, run_id).cancel_requested is True


@pytest.mark.parametrize("status", ["promoted", "rejected", "failed", "cancelled"])
def test_a_finished_run_cannot_be_cancelled(api, db, status):
    run_id = add_training_run(db, status=status)
    response = api.post(f"/admin/api/training-runs/{run_id}/cancel")
    assert response.status_code == 409
    assert f"is {status} already" in response.json["error"]
    assert stored_run(db, run_id).status == status


def test_cancelling_an_unknown_run_answers_404(api):
    assert api.post("/admin/api/training-runs/nosuchrun/cancel").status_code == 404


# --- Promotion by hand ----------------------------------------------------------------------


def test_a_rejected_candidate_is_promoted_by_hand(api, db, model):
    model_version_files(model, 7)
    candidate = model_version_files(model, 8, where="candidate")
    run_id = add_training_run(db, status="rejected", version=8, message="worse on pear")
    response = api.post("/admin/api/models/8/promote")
    assert response.status_code == 200, response.json
    assert response.json["version"] == 8 and response.json["promoted"] is True
    assert (model / "8" / "saved_model.pb").is_file() and not candidate.exists()
    assert stored_run(db, run_id).message == "worse on pear Promoted by hand by admin."


def test_promoting_a_candidate_older_than_the_served_version_answers_409(api, model):
    model_version_files(model, 7)
    candidate = model_version_files(model, 5, where="candidate")
    response = api.post("/admin/api/models/5/promote")
    assert response.status_code == 409
    assert "version 7 is newer and served" in response.json["error"]
    assert candidate.exists() and not (model / "5").exists()


def test_promoting_a_served_version_answers_409_and_an_unknown_one_404(api, model):
    model_version_files(model, 7)
    served = api.post("/admin/api/models/7/promote")
    assert served.status_code == 409 and "not a candidate" in served.json["error"]
    assert (model / "7").is_dir()
    unknown = api.post("/admin/api/models/99/promote")
    assert unknown.status_code == 404 and "no candidate version 99" in unknown.json["error"]
    assert api.post("/admin/api/models/x/promote").status_code == 404


def test_a_session_promotion_needs_the_csrf_header(admin_client, model):
    candidate = model_version_files(model, 8, where="candidate")
    assert admin_client.post("/admin/api/models/8/promote").status_code == 400
    assert candidate.exists()


# --- The models page ------------------------------------------------------------------------


def per_class(**recalls: float) -> dict:
    return {name: {"precision": 0.9, "recall": r, "f1": 0.9, "support": 10}
            for name, r in recalls.items()}


GATE = {
    "decision": "rejected", "reason": "worse on the reviewed photos", "margin": 0.02,
    "method": "accuracy", "serving_version": 2, "candidate_version": 3,
    "reviewed": {"images": 12, "candidate": {"accuracy": 0.75, "per_class": {
        "apple": {"accuracy": 0.5, "images": 4}, "pear": {"accuracy": 0.875, "images": 8}}},
        "serving": {"accuracy": 0.8333, "per_class": {"apple": {"accuracy": 0.75, "images": 4}}}},
    "base_test": {"images": 90},  # no figures: tolerated
}


def test_the_models_page_shows_runs_candidates_gates_and_what_changed(
        admin_client, db, store, model):
    model_version_files(model, 1, metrics={"test": {"accuracy": 0.9, "per_class": per_class(
        apple=0.8, pear=0.9)}, "data": {"images": 600}})
    model_version_files(model, 2, metrics={"test": {"accuracy": 0.95, "per_class": per_class(
        apple=0.9, pear=0.85, plum=1.0)}, "data": {"images": 610, "reviewed_images": 10}})
    model_version_files(model, 3, where="candidate",
                        metrics={"test": {"accuracy": 0.93}, "data": {"images": 612}})
    run = add_training_run(db, status="rejected", version=3, base_images=600,
                           reviewed_images=12, gate=GATE, message="rejected: worse")
    active = add_training_run(db, status="running", phase="head epochs", progress=0.5,
                              eta_seconds=30.0, heartbeat_at=utcnow())
    for seed, correct in enumerate([True, False]):
        add_prediction(db, store, seed, model_version=1, correct=correct,
                       true_label="apple" if correct else "pear", reviewed_at=utcnow(),
                       reviewed_by="admin")
    response = admin_client.get("/admin/models")
    assert response.status_code == 200
    html = " ".join(response.get_data(as_text=True).split())
    for text in [
        'id="retrain" disabled', f'data-active="{active}"', "head epochs",
        "Candidates waiting for promotion", 'data-url="/admin/api/models/3/promote"',
        "Promote 3", f"base + 12 reviewed photos, run {run}",
        "base + 10 reviewed photos", "base photos only",
        "<h3>Gate: rejected</h3>", "worse on the reviewed photos", "Against version 2",
        "On the reviewed photos (12 images)", "<td>75.0%</td><td>83.3%</td>",
        "<th scope=\"row\">pear</th><td>87.5%</td><td>–</td><td>8</td>",
        "On the base test split (90 images)",
        "Since it went live: 50.0% right on 2 reviewed records",
        "Test recall per class against version 1",
        "<td>apple</td><td>90.0%</td><td>80.0%</td><td>+10.0 points</td>",
        "<td>pear</td><td>85.0%</td><td>90.0%</td><td>-5.0 points</td>",
        "<td>plum</td><td>100.0%</td><td>new class</td>",
        "rejected: worse", "models.js",
    ]:
        assert text in html, text


def test_the_models_page_without_runs_offers_a_retrain_button(admin_client):
    html = admin_client.get("/admin/models").get_data(as_text=True)
    assert 'id="retrain">' in html and "No run yet." in html
    assert "Candidates waiting" not in html
    assert admin_client.get("/static/models.js").status_code == 200
