"""Prometheus metrics: the site's /metrics read from a real database and Redis,
its bearer token, what it leaves out when a source is down, the proxy that hides
it, and a real worker process serving its own counters on its port."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from honcho.environ import parse_procfile

from core import launch
from core.contract import CLASSES, SCORES
from core.rollout import store as rollout_store
from core.rollout.state import Mode, State
from core.settings import ROOT, get_settings
from tests.factories import (
    add_prediction,
    add_timed_answers,
    days_ago,
    free_port,
    listening,
    part,
    photo_bytes,
    scraped,
    stand_in_serving,
    stop,
    wait_until,
)
from tests.proxy_process import NGINX, gunicorn, nginx


def metric(scrape: dict, name: str, **labels: str) -> float | None:
    return scrape.get((name, frozenset(labels.items())))


def names(scrape: dict) -> set[str]:
    return {name for name, _ in scrape}


@pytest.fixture
def make_app(env: dict[str, str]) -> Iterator:
    """create_app() once the test has set its environment; the apps closed at the end."""
    from frontend import create_app

    made = []

    def make():
        made.append(create_app({"TESTING": True}))
        return made[-1]

    yield make
    for app in made:
        app.extensions["classifier"].db.dispose()
        app.extensions["classifier"].redis.close()


# --- the site's figures -----------------------------------------------------------------------

def test_metrics_count_records_by_version_role_and_status(client, db, store) -> None:
    add_timed_answers(db, 1, "stable", [1, 2, 10], confidence=0.8)
    add_timed_answers(db, 1, "stable", [100], minutes_ago=60)  # outside the quantiles' window
    add_timed_answers(db, 2, "canary", [3, 4], source="api", confidence=0.6)
    add_timed_answers(db, 2, "canary", [5], status="failed", label=None, confidence=None,
                      serving_ms=None, error="refused")
    add_prediction(db, store, 1, status="failed", model_version=None, error="no image")
    add_prediction(db, store, 2, status="queued", source="batch",
                   created_at=days_ago(2 / (24 * 60)))
    with db.session() as session:
        rollout_store.save(session, State(Mode.PINNED, 1, 2, 0.1, None), by="test",
                           seen=rollout_store.load(session))
        rollout_store.record(session, "rollback", "the canary failed", version=2)
        rollout_store.record(session, "changed", "by hand", version=2)

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    scrape = scraped(response.get_data(as_text=True))

    prediction = "classifier_predictions"
    assert metric(scrape, prediction, version="1", role="stable", status="done") == 4
    assert metric(scrape, prediction, version="2", role="canary", status="done") == 2
    assert metric(scrape, prediction, version="2", role="canary", status="failed") == 1
    assert not [key for key in scrape if key[0] == prediction and ("version", "none") in key[1]]
    assert metric(scrape, "classifier_failures", version="2") == 1
    assert metric(scrape, "classifier_failures", version="none") == 1
    assert metric(scrape, "classifier_uploads", source="page") == 6
    assert metric(scrape, "classifier_uploads", source="api") == 2
    assert metric(scrape, "classifier_uploads", source="batch") == 1
    assert metric(scrape, "classifier_records", status="done") == 6
    assert metric(scrape, "classifier_records", status="failed") == 2
    assert metric(scrape, "classifier_records", status="queued") == 1
    assert metric(scrape, "classifier_records", status="running") == 0
    assert 115 <= metric(scrape, "classifier_queue_wait_seconds") < 300

    # The last 15 minutes only: the hour-old 100 s answer is in no quantile.
    result = "classifier_result_seconds"
    assert metric(scrape, result, version="1", role="stable", quantile="0.5") == pytest.approx(2)
    assert metric(scrape, result, version="1", role="stable", quantile="0.99") == pytest.approx(10)
    assert metric(scrape, result, version="2", role="canary", quantile="0.99") == pytest.approx(5)
    serving = "classifier_serving_seconds"
    assert metric(scrape, serving, version="1", role="stable", quantile="0.5") == pytest.approx(0.2)
    assert metric(scrape, serving, version="2", role="canary", quantile="0.5") == pytest.approx(0.3)
    assert metric(scrape, "classifier_recent_answers", version="1", role="stable") == 3
    assert metric(scrape, "classifier_recent_answers", version="2", role="canary") == 3
    assert metric(scrape, "classifier_confidence_mean", version="1") == pytest.approx(0.8)
    assert metric(scrape, "classifier_confidence_mean", version="2") == pytest.approx(0.6)

    assert metric(scrape, "classifier_canary_share") == pytest.approx(0.1)
    assert metric(scrape, "classifier_rollout_info", mode="pinned", stable="1", canary="2",
                  shadow="") == 1
    assert metric(scrape, "classifier_rollbacks_total") == 1
    assert metric(scrape, "classifier_queue_depth", queue="predictions") == 0
    assert metric(scrape, "classifier_metrics_source_up", source="database") == 1
    assert metric(scrape, "classifier_metrics_source_up", source="redis") == 1


def test_metrics_count_the_jobs_waiting_in_each_queue(client) -> None:
    """An upload queues one job on the single uploads' queue, none on the batches'."""
    response = client.post("/api/predictions", data={"image": part(photo_bytes(), "a.jpg")})
    assert response.status_code == 202
    scrape = scraped(client.get("/metrics").get_data(as_text=True))
    assert metric(scrape, "classifier_queue_depth", queue="predictions") == 1
    assert metric(scrape, "classifier_queue_depth", queue="predictions-batch") == 0
    assert metric(scrape, "classifier_records", status="queued") == 1


def test_metrics_export_each_versions_drift(client, db, env) -> None:
    from core.rollout import drift
    from tests.factories import add_answers, model_version_files

    classes = ["circle", "square", "triangle"]
    folder = Path(env["MODEL_BASE_PATH"]) / env["MODEL_NAME"]
    model_version_files(folder, 3, metrics={"class_names": classes, "reference": drift.reference(
        classes, ["circle", "square", "triangle"] * 10, [0.97] * 30)})
    add_answers(db, 3, {("circle", 0.62): 50})  # all circles, all unsure: far off
    scrape = scraped(client.get("/metrics").get_data(as_text=True))
    assert metric(scrape, "classifier_drift_psi", version="3", kind="class_mix") > 0.25
    assert metric(scrape, "classifier_drift_psi", version="3", kind="confidence") > 0.25


# --- the token and sources that are down ------------------------------------------------------

@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic c2VjcmV0", "Bearer",
                                    "Bearer s3cret-metrics-token-but-longer",
                                    "Bearer s3cret-metrics-t\u00f6ken"],
                         ids=["missing", "wrong", "basic", "empty", "longer", "latin-1"])
def test_metrics_with_a_token_refuse_any_other_bearer(make_app, monkeypatch,
                                                      header: str | None) -> None:
    monkeypatch.setenv("METRICS_TOKEN", "s3cret-metrics-token")
    client = make_app().test_client()
    refused = client.get("/metrics", headers={"Authorization": header} if header else {})
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "METRICS_TOKEN" in refused.get_json()["error"]
    assert "classifier_" not in refused.get_data(as_text=True)
    allowed = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"})
    assert allowed.status_code == 200
    assert "classifier_records" in allowed.get_data(as_text=True)


def test_metrics_without_a_token_are_open(client) -> None:
    assert get_settings().monitoring.metrics_token is None
    assert client.get("/metrics").status_code == 200


def test_metrics_leave_the_queues_out_while_redis_is_down(make_app, monkeypatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    response = make_app().test_client().get("/metrics")
    assert response.status_code == 200
    scrape = scraped(response.get_data(as_text=True))
    assert "classifier_queue_depth" not in names(scrape)
    assert metric(scrape, "classifier_metrics_source_up", source="redis") == 0
    assert metric(scrape, "classifier_metrics_source_up", source="database") == 1
    assert metric(scrape, "classifier_records", status="done") == 0


def test_metrics_leave_the_records_out_while_the_database_is_down(make_app,
                                                                  monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL",
                       f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    response = make_app().test_client().get("/metrics")
    assert response.status_code == 200
    scrape = scraped(response.get_data(as_text=True))
    assert not {"classifier_records", "classifier_predictions"} & names(scrape)
    assert metric(scrape, "classifier_metrics_source_up", source="database") == 0
    assert metric(scrape, "classifier_queue_depth", queue="predictions") == 0


def test_metrics_are_never_rate_limited(client) -> None:
    assert {client.get("/metrics").status_code for _ in range(30)} == {200}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_proxy_refuses_metrics_that_the_site_serves(env, tmp_path: Path) -> None:
    if not NGINX.is_file():
        pytest.skip(f"{NGINX} is missing (make nginx)")
    from tests.test_proxy import COMPOSED

    with gunicorn(tmp_path / "gunicorn.log") as site:
        values = COMPOSED | {"PROXY_UPSTREAM": f"127.0.0.1:{site}",
                             "PROXY_LISTEN": f"127.0.0.1:{free_port()}",
                             "PROXY_RESOLVER": "127.0.0.1"}
        with nginx(tmp_path / "nginx", values) as proxy:
            assert _status(f"http://127.0.0.1:{site}/metrics") == 200
            for path in ("/metrics", "/metrics?format=x", "//metrics", "/%6detrics"):
                assert _status(f"http://127.0.0.1:{proxy}{path}") == 404, path
            assert _status(f"http://127.0.0.1:{proxy}/healthz") == 200


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# --- a worker's own --------------------------------------------------------------------------

@pytest.fixture
def answering_serving(monkeypatch) -> Iterator[str]:
    """A Serving with version 1 AVAILABLE that says "circle" at 0.9 to one image."""

    def predict():
        return 200, {"predictions": [{CLASSES: ["circle", "square"], SCORES: [0.9, 0.1]}]}

    with stand_in_serving(predict) as url:
        monkeypatch.setenv("SERVING_URL", url)
        yield url


def test_a_worker_serves_its_counters_on_its_metrics_port(make_app, answering_serving,
                                                          tmp_path: Path) -> None:
    client = make_app().test_client()
    port = free_port()
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen([sys.executable, "-m", "worker", "--metrics-port", str(port)],
                                  cwd=ROOT, env=os.environ.copy(), stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: listening(port), 30, f"the worker's metrics on port {port}",
                   detail=log.read_text)
        before = scraped(_get(port))
        assert "classifier_worker_job_seconds_count" in names(before)
        response = client.post("/api/predictions", data={"image": part(photo_bytes(), "a.jpg")})
        assert response.status_code == 202
        done = "classifier_worker_predictions_total"
        wait_until(lambda: metric(scraped(_get(port)), done, version="1", role="newest",
                                  status="done") == 1, 60, "the worker's prediction counted",
                   detail=log.read_text)
        after = scraped(_get(port))
        assert metric(after, "classifier_worker_jobs_total", outcome="done") == 1
        assert metric(after, "classifier_worker_job_seconds_count") == 1
        assert metric(after, "classifier_worker_serving_seconds_count", version="1",
                      role="newest") == 1
    finally:
        stop(worker)
    assert "worker metrics on http://127.0.0.1:" in log.read_text()


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_a_burst_worker_serves_no_metrics(env) -> None:
    result = subprocess.run([sys.executable, "-m", "worker", "--burst", "--metrics-port",
                             str(free_port())], cwd=ROOT, env=os.environ.copy(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "worker metrics" not in result.stderr


@pytest.mark.parametrize("port", ["-1", "65536", "nine"])
def test_a_worker_refuses_a_metrics_port_that_is_none(env, port: str) -> None:
    result = subprocess.run([sys.executable, "-m", "worker", "--metrics-port", port],
                            cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "is not a port" in result.stderr


def test_make_run_gives_each_worker_a_metrics_port_of_its_own(redis_url, monkeypatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("WORKER_METRICS_PORT", "9300")
    argv = launch.honcho_argv(get_settings(), workers=3)
    procfile = Path(argv[argv.index("--procfile") + 1])
    processes = parse_procfile(procfile.read_text()).processes
    workers = [name for name in argv if name.startswith("worker")]
    assert workers == ["worker1", "worker2", "worker3"]
    assert [processes[name].split()[-2:] for name in workers] == [
        ["--metrics-port", "9300"], ["--metrics-port", "9301"], ["--metrics-port", "9302"]]
    assert argv[argv.index("web"):] == ["web", *workers, "trainer", "serving"]
    assert not any(flag.startswith("--concurrency") for flag in argv)
    # Without the setting: the Procfile itself, its one worker line run three times.
    monkeypatch.setenv("WORKER_METRICS_PORT", "0")
    argv = launch.honcho_argv(get_settings(), workers=3)
    assert argv[argv.index("--procfile") + 1] == str(launch.PROCFILE)
    assert "worker=3" in argv and "worker" in argv
