"""`make run`, README's first command: from no model to a served one behind the
site, a live roll-out of a dropped version, and Ctrl-C stopping everything.

It runs the real command in a process group of its own, the way a terminal
does, with every address and folder private to the test: its own Redis port
(nothing listens there, so the embedded redis-server starts), Serving port,
site port, SQLite file and model folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from core import launch
from core.settings import ROOT, Settings
from tests.factories import free_port, listening, photo_bytes, wait_until


def printed(log: Path) -> Callable[[], str]:
    """What make run printed so far, for a failure message."""
    return lambda: f"make run printed:\n{log.read_text()[-6000:]}"


def classify(site: str, photo: bytes) -> dict:
    answer = requests.post(f"{site}/api/predictions", files={"image": ("shape.png", photo)},
                           timeout=30)
    assert answer.status_code == 202, answer.text
    url = f"{site}/api/predictions/{answer.json()['id']}?wait=30"
    for _ in range(10):
        record = requests.get(url, timeout=60).json()
        if record["status"] in ("done", "failed"):
            return record
    pytest.fail(f"no result: {record}")


def served_versions(serving: str) -> set[int]:
    try:
        status = requests.get(f"{serving}/v1/models/classifier", timeout=5).json()
    except (requests.RequestException, ValueError):
        return set()
    return {int(v["version"]) for v in status.get("model_version_status", [])
            if v["state"] == "AVAILABLE"}


def test_make_run_trains_serves_rolls_out_and_stops_on_ctrl_c(tmp_path: Path, shapes_dir: Path,
                                                               keras_home: Path):
    web, serving, redis = free_port(), free_port(), free_port()
    models = tmp_path / "models"
    env = os.environ | {
        "PORT": str(web), "WORKERS": "1",
        "SERVING_URL": f"http://127.0.0.1:{serving}",
        "REDIS_URL": f"redis://127.0.0.1:{redis}/0",
        "REDIS_DATA_DIR": str(tmp_path / "redis"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "UPLOAD_DIR": str(tmp_path / "uploads"),
        "MODEL_BASE_PATH": str(models), "MODEL_NAME": "classifier",
        "DATASET_DIR": str(shapes_dir), "KERAS_HOME": str(keras_home),
        "TRAIN_ARGS": "--epochs 30 --augmented-views 1",
    }
    env.pop("WEB_BIND", None)
    log = tmp_path / "make-run.log"
    with log.open("w") as out:
        make = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    site = f"http://127.0.0.1:{web}"
    try:
        wait_until(lambda: served_versions(f"http://127.0.0.1:{serving}") == {1}, 600,
                   "a first version trained and served", interval=0.5, detail=printed(log))
        wait_until(lambda: listening(web), 60, "the site", interval=0.5, detail=printed(log))
        first = classify(site, photo_bytes("circle", 7, "PNG"))
        assert first["status"] == "done", first
        assert first["model_version"] == 1
        assert first["label"] in ("circle", "square", "triangle")

        # Ops roll out a version by dropping a folder: whole, then renamed into place.
        staging = models / "classifier" / ".incoming"
        shutil.copytree(models / "classifier" / "1", staging)
        staging.rename(models / "classifier" / "2")
        wait_until(lambda: 2 in served_versions(f"http://127.0.0.1:{serving}"), 120,
                   "version 2 rolled out", interval=0.5, detail=printed(log))
        second = classify(site, photo_bytes("square", 7, "PNG"))
        assert second["model_version"] == 2, second
        page = requests.get(f"{site}/p/{second['id']}", timeout=10).text
        assert "Model version 2 ·" in page

        text = log.read_text()
        assert f"http://127.0.0.1:{web}/" in text
        assert "make admin NAME=" in text
        assert "embedded redis-server" in text
        assert listening(redis)
    finally:
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            make.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            pytest.fail(f"Ctrl-C did not stop make run:\n{log.read_text()[-4000:]}")
    for port in (web, serving, redis):
        assert not listening(port), f"port {port} still open after Ctrl-C"
    # honcho starts each process in a session of its own: none may outlive it.
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", leftovers.stdout
    assert (tmp_path / "redis" / "appendonly.aof").exists() or \
        any((tmp_path / "redis").glob("appendonly*")), "Redis kept no append-only file"


def settings_with(**values: str) -> Settings:
    env = {"REDIS_URL": "redis://127.0.0.1:6379/0"} | values
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return Settings.from_env()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def test_launch_starts_no_redis_when_one_answers(redis_url: str, capsys):
    settings = settings_with(REDIS_URL=redis_url)
    argv = launch.honcho_argv(settings, workers=3)
    assert argv[-4:] == ["web", "worker", "trainer", "serving"]
    assert "worker=3" in argv
    assert "the one already running" in capsys.readouterr().out


def test_launch_adds_embedded_redis_when_none_answers(capsys):
    settings = settings_with(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    argv = launch.honcho_argv(settings, workers=1)
    assert argv[-5:] == ["web", "worker", "trainer", "serving", "redis"]
    assert "embedded redis-server" in capsys.readouterr().out


def test_launch_refuses_to_embed_redis_for_another_host():
    with pytest.raises(launch.LaunchError, match="only run on this machine"):
        launch.redis_argv(settings_with(REDIS_URL="redis://redis.example.internal:6379/0"))


def test_embedded_redis_persists_to_an_append_only_file():
    argv = launch.redis_argv(settings_with(REDIS_URL="redis://127.0.0.1:6390/0"))
    assert Path(argv[0]).name == "redis-server"
    assert argv[argv.index("--port") + 1] == "6390"
    assert argv[argv.index("--appendonly") + 1] == "yes"


def test_serving_reads_the_containers_config_when_models_live_where_it_says():
    argv = launch.serving_argv(settings_with(MODEL_BASE_PATH=str(ROOT / "models"),
                                             MODEL_NAME="classifier"))
    assert str(ROOT / "serving" / "models.config") in argv
    assert argv[argv.index("--base_path_root") + 1] == str(ROOT)


def test_serving_is_told_the_model_when_it_lives_elsewhere(tmp_path: Path):
    argv = launch.serving_argv(settings_with(MODEL_BASE_PATH=str(tmp_path),
                                             MODEL_NAME="flowers",
                                             SERVING_URL="http://127.0.0.1:9501"))
    assert "--model_config_file" not in argv
    assert argv[argv.index("--model_base_path") + 1] == str(tmp_path / "flowers")
    assert "--rest_api_port=9501" in argv
