"""Hot rollout, rollback, live config changes and draining, under real load.

The models here are tiny SavedModels whose answer is their own version
number, so every response says which version served it.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests
import tensorflow as tf

from core.serving_client import ServingClient, ServingRequestError
from tests.factories import wait_until
from tests.serving_process import available_versions, running

POLL_SECONDS = 1.0


def tiny_model(path: Path, answer: float) -> float:
    """A SavedModel mapping x [N, 1] to y = answer, written atomically.

    Returns the time.monotonic() at which the version folder appeared.
    """

    class Constant(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": x * 0.0 + answer}

    module = Constant()
    staging = path.parent / f".staging-{path.name}"
    tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve})
    os.rename(staging, path)
    return time.monotonic()


def broken_model(path: Path) -> None:
    staging = path.parent / f".staging-{path.name}"
    (staging / "variables").mkdir(parents=True)
    (staging / "saved_model.pb").write_bytes(b"this is not a protocol buffer" * 10)
    os.rename(staging, path)


class Load:
    """Clients sending requests back to back, recording every answer or failure."""

    def __init__(self, url: str, model: str, clients: int = 4):
        self.url, self.model = url, model
        self.answers: list[tuple[float, float]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        client = ServingClient(self.url, self.model, retries=0, timeout=30)
        while not self._stop.is_set():
            try:
                answer = client.predict(instances=[[1.0], [2.0]])["predictions"]
                self.answers.append((time.monotonic(), answer[0][0]))
            except ServingRequestError as error:
                self.failures.append(str(error))

    def answered_since(self, since: float) -> set[float]:
        return {value for at, value in list(self.answers) if at >= since}

    def first_answer(self, value: float, since: float) -> float:
        return min(at for at, v in list(self.answers) if v == value and at >= since)


def state_of(client: ServingClient, version: int) -> str | None:
    try:
        return client.status(version=version)[0]["state"]
    except ServingRequestError:
        return None


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """The model's base path, versions dropped in by each test."""
    path = tmp_path / "tiny"
    path.mkdir()
    return path


def tiny_server(base: Path, *flags: str):
    return running(["--model_name=tiny", f"--model_base_path={base}", *flags],
                   base.parent / "server.log")


def slow_batches(folder: Path, timeout_micros: int) -> Path:
    """A batching file under which each request waits for company that never comes."""
    path = folder / "slow_batching.config"
    path.write_text(f"max_batch_size {{ value: 64 }}\n"
                    f"batch_timeout_micros {{ value: {timeout_micros} }}\n")
    return path


def test_rollout_broken_version_and_rollback_under_load(base: Path):
    batching = base.parent / "batching.config"
    batching.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n"
                        "num_batch_threads { value: 1 }\n")
    tiny_model(base / "1", 1.0)
    with tiny_server(base, f"--file_system_poll_wait_seconds={POLL_SECONDS}",
                     "--enable_batching", f"--batching_parameters_file={batching}") as server:
        client = server.client("tiny")
        wait_until(lambda: available_versions(client) == {1}, 60, "version 1")
        with Load(server.url, "tiny") as load:
            time.sleep(1)
            # A new version: routed to within two polls, the old one then unloaded.
            dropped = tiny_model(base / "2", 2.0)
            wait_until(lambda: 2.0 in load.answered_since(dropped), 10, "version 2 answers")
            assert load.first_answer(2.0, dropped) - dropped <= 2 * POLL_SECONDS
            wait_until(lambda: available_versions(client) == {2}, 10, "version 1 unloaded")

            # A broken version: its error is reported, version 2 keeps serving.
            broken_model(base / "3")
            wait_until(lambda: state_of(client, 3) == "END", 10, "version 3 to fail")
            status = client.status(version=3)[0]["status"]
            assert status["error_code"] == "DATA_LOSS"
            assert "is not a SavedModel" in status["error_message"]
            time.sleep(2 * POLL_SECONDS)
            assert available_versions(client) == {2}
            # Not retried while its files are unchanged.
            assert server.log().count("Loading servable version {name: tiny version: 3}") == 1

            # Deleting the newest good version rolls back to version 1.
            shutil.rmtree(base / "2")
            wait_until(lambda: available_versions(client) == {1}, 15, "rollback to version 1")
            # Requests holding version 2 finish on it; once it is unloaded, only 1 answers.
            wait_until(lambda: state_of(client, 2) == "END", 15, "version 2 unloaded")
            settled = time.monotonic()
            time.sleep(1)
            assert load.answered_since(settled) == {1.0}
            broken_answers = {value for _, value in load.answers}

            # Repairing the broken version's files gets it loaded and served.
            shutil.rmtree(base / "3")
            repaired = tiny_model(base / "3", 3.0)
            wait_until(lambda: 3.0 in load.answered_since(repaired), 15, "repaired version 3")

        assert load.failures == []
        assert len(load.answers) > 50
        assert broken_answers == {1.0, 2.0}  # version 3 never answered while broken
        log = server.log()
        assert "Failed to load servable version {name: tiny version: 3}" in log
        assert "Unloading servable version {name: tiny version: 2}: its folder was deleted" in log


def test_a_version_wanted_again_while_unloading_is_kept_serving(base: Path):
    tiny_model(base / "2", 2.0)
    batching = slow_batches(base.parent, 5_000_000)
    with tiny_server(base, "--file_system_poll_wait_seconds=0.3", "--enable_batching",
                     f"--batching_parameters_file={batching}") as server:
        client = server.client("tiny")
        wait_until(lambda: available_versions(client) == {2}, 60, "version 2")
        answers: list[object] = []
        held = threading.Thread(target=lambda: answers.append(
            client.predict(instances=[[0.0]], version=2)))
        held.start()  # version 2 now has a request in flight for 5 s
        time.sleep(0.3)
        tiny_model(base / "3", 3.0)
        wait_until(lambda: state_of(client, 2) == "UNLOADING", 10, "version 3 to replace 2")
        shutil.rmtree(base / "3")  # rolled back before version 2 was gone
        wait_until(lambda: available_versions(client) == {2}, 10, "version 2 kept")
        held.join()
        assert answers == [{"predictions": [[2.0]]}]
        assert "Keeping servable version {name: tiny version: 2}" in server.log()
        assert server.log().count("Loading servable version {name: tiny version: 2}") == 1


def test_config_file_changes_are_applied_live(base: Path):
    tiny_model(base / "1", 1.0)
    tiny_model(base / "2", 2.0)
    config = base.parent / "models.config"

    def write_config(policy: str, labels: str = "") -> None:
        staging = base.parent / "models.config.new"
        staging.write_text(f'model_config_list {{ config {{ name: "tiny" base_path: "{base}" '
                           f'model_platform: "tensorflow" model_version_policy {{ {policy} }} '
                           f'{labels} }} }}')
        os.rename(staging, config)

    write_config("latest { num_versions: 1 }")
    with running([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=0.5"],
                 base.parent / "server.log") as server:
        client = server.client("tiny")
        wait_until(lambda: available_versions(client) == {2}, 60, "version 2")
        write_config("specific { versions: 1 }", 'version_labels { key: "stable" value: 1 }')
        wait_until(lambda: available_versions(client) == {1}, 15, "pinned version 1")
        assert client.predict(instances=[[0.0]], label="stable") == {"predictions": [[1.0]]}

        config.write_text("model_config_list { config { name: ")  # a botched edit
        wait_until(lambda: "Keeping the current config" in server.log(), 10, "the bad config")
        assert client.predict(instances=[[0.0]]) == {"predictions": [[1.0]]}

        write_config("all {}")
        wait_until(lambda: available_versions(client) == {1, 2}, 15, "both versions")
        assert client.predict(instances=[[0.0]], version=2) == {"predictions": [[2.0]]}


def test_sigterm_finishes_in_flight_requests_then_exits(base: Path):
    tiny_model(base / "1", 1.0)
    batching = slow_batches(base.parent, 5_000_000)
    answers: list[object] = []
    with tiny_server(base, "--enable_batching",
                     f"--batching_parameters_file={batching}") as server:
        client = server.client("tiny")
        wait_until(lambda: available_versions(client) == {1}, 60, "version 1")
        in_flight = threading.Thread(target=lambda: answers.append(requests.post(
            f"{server.url}/v1/models/tiny:predict", json={"instances": [[5.0]]},
            timeout=30).json()))
        in_flight.start()  # waits 5 s in the batch queue
        time.sleep(1.5)
    # running() has sent SIGTERM and seen exit code 0.
    in_flight.join()
    assert answers == [{"predictions": [[1.0]]}]
    log = server.log()
    assert "Received SIGTERM" in log
    assert "Done unloading servable version {name: tiny version: 1}" in log
    with pytest.raises(ServingRequestError):
        ServingClient(server.url, "tiny", retries=0).status()


def test_the_repositorys_own_config_files_serve_the_model_folder(tmp_path: Path):
    (tmp_path / "models" / "classifier").mkdir(parents=True)
    tiny_model(tmp_path / "models" / "classifier" / "1", 1.0)
    with running(["--model_config_file=serving/models.config", f"--base_path_root={tmp_path}",
                  "--enable_batching", "--batching_parameters_file=serving/batching.config",
                  "--monitoring_config_file=serving/monitoring.config"],
                 tmp_path / "server.log") as server:
        client = server.client("classifier")
        wait_until(lambda: available_versions(client) == {1}, 60, "version 1")
        assert client.predict(instances=[[0.0]]) == {"predictions": [[1.0]]}
        metrics = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=10)
        assert ':tensorflow:serving:model_version_available{model_name="classifier",' \
               'version="1"} 1.0' in metrics.text
