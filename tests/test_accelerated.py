"""A version's pixels.tflite run by LiteRT in place of its SavedModel's network:
the same pixels, the same answers, and the SavedModel whenever the file cannot
be trusted."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import requests
import tensorflow as tf

from core.contract import ACCELERATED_FILE, CLASSES, INPUT, SCORES, SIGNATURE
from core.settings import get_settings
from serving import accelerated
from serving.servable import Servable
from tests.factories import draw_photo, encoded, wait_until
from tests.serving_process import available_versions, running
from trainer.accelerate import QUANTIZATIONS
from trainer.images import decode_and_resize

FORMATS = ["JPEG", "PNG", "GIF", "BMP", "WEBP"]


def served_copy(version_dir: Path, tmp_path: Path) -> Path:
    """A private copy of a version folder (model/1) whose files a test may spoil."""
    return Path(shutil.copytree(version_dir, tmp_path / "model" / "1"))


def pixels_model(model: keras.Model) -> bytes:
    """`model` as a TFLite file, float32, as the trainer converts its own."""
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def constant_model(scores: list[float]) -> keras.Model:
    """Takes pixels like the real file and answers `scores` for every photo."""
    inputs = keras.Input((224, 224, 3), batch_size=1)
    zero = keras.layers.Lambda(lambda x: tf.reduce_sum(x, axis=[1, 2, 3], keepdims=True) * 0)(
        inputs)
    outputs = keras.layers.Lambda(lambda z: tf.reshape(z, [1, 1]) + tf.constant([scores]))(zero)
    return keras.Model(inputs, outputs)


def photos(fmt: str) -> np.ndarray:
    return np.array([encoded(draw_photo(kind, seed=70_000 + i, size=(300, 200)), fmt)
                     for i, kind in enumerate(["circle", "square", "triangle"])], object)


@pytest.fixture(scope="module")
def shapes_servable(trained) -> Servable:
    servable = Servable(trained.version_dir)
    accelerated.attach(servable, threads=2)
    return servable


def test_the_trainer_writes_a_checked_file_and_reports_every_quantization_tried(trained):
    entry = trained.metrics["accelerated"]
    assert entry["file"] == ACCELERATED_FILE
    assert (trained.version_dir / ACCELERATED_FILE).stat().st_size == \
        entry["tried"][entry["quantization"]]["bytes"]
    # Fastest first, and none tried after the first that passed.
    assert list(entry["tried"]) == list(QUANTIZATIONS[:QUANTIZATIONS.index(
        entry["quantization"]) + 1])
    test_photos = len((trained.report_dir / "test.txt").read_text().splitlines())
    for tried in entry["tried"].values():
        check = tried["checks"]["test"]
        assert check["photos"] == test_photos
        assert tried["passed"] == (check["same_top_class"] >= 0.99
                                   and check["accuracy_points_apart"] <= 0.5)
    assert entry["tried"][entry["quantization"]]["passed"]


def test_the_fruit_file_passes_on_photos_from_elsewhere(fruit_model):
    entry = fruit_model.metrics["accelerated"]
    assert entry["file"] == ACCELERATED_FILE
    webstock = str(get_settings().check_photos_dir.resolve())
    chosen = entry["tried"][entry["quantization"]]["checks"]
    assert set(chosen) == {"test", webstock}
    assert chosen[webstock]["photos"] == 179
    assert chosen[webstock]["same_top_class"] >= 0.99
    assert chosen[webstock]["accuracy_points_apart"] <= 0.5


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_server_decodes_the_same_pixels_as_training(shapes_servable, fmt):
    files = photos(fmt)
    served = shapes_servable.accelerator.decode(files)
    for pixels, data in zip(served, files, strict=True):
        np.testing.assert_array_equal(pixels, decode_and_resize(tf.constant(data)).numpy())


@pytest.mark.parametrize("fmt", FORMATS)
def test_both_backends_answer_alike_in_every_format(trained, shapes_servable, fmt):
    files = photos(fmt)
    assert shapes_servable.backend == "litert"
    fast = shapes_servable.run(SIGNATURE, {INPUT: files})
    saved = shapes_servable.run_saved_model(SIGNATURE, {INPUT: files})
    # int8 scores are steps of 1/256; float32 keeps the SavedModel's to rounding.
    int8 = trained.metrics["accelerated"]["quantization"] == "int8"
    np.testing.assert_allclose(fast[SCORES], saved[SCORES], atol=1 / 64 if int8 else 1e-4)
    assert (fast[SCORES].argmax(1) == saved[SCORES].argmax(1)).all()
    assert (fast[CLASSES] == saved[CLASSES]).all()


def test_both_backends_agree_on_real_photos_from_two_sources(fruit_model):
    servable = Servable(fruit_model.version_dir)
    accelerated.attach(servable, threads=2)
    assert servable.backend == "litert"
    settings = get_settings()
    files = [p.read_bytes() for folder in (settings.fruits_dir, settings.check_photos_dir)
             for p in sorted(folder.glob("*/*"))[::4]]
    batch = {INPUT: np.array(files, object)}
    fast, saved = servable.run(SIGNATURE, batch), servable.run_saved_model(SIGNATURE, batch)
    assert len(files) > 150
    np.testing.assert_allclose(fast[SCORES], saved[SCORES], atol=1e-4)
    assert (fast[SCORES].argmax(1) == saved[SCORES].argmax(1)).all()


def test_a_version_without_the_file_is_served_by_its_saved_model(trained, tmp_path: Path):
    folder = served_copy(trained.version_dir, tmp_path)
    (folder / ACCELERATED_FILE).unlink()
    servable = Servable(folder)
    accelerated.attach(servable, threads=1)
    assert servable.accelerator is None and servable.backend == "saved_model"
    assert servable.describe_backend() == "its SavedModel"


def spoiled(trained, tmp_path: Path, content: bytes, caplog) -> tuple[Servable, str]:
    folder = served_copy(trained.version_dir, tmp_path)
    (folder / ACCELERATED_FILE).write_bytes(content)
    servable = Servable(folder)
    with caplog.at_level(logging.WARNING, logger="serving.accelerated"):
        accelerated.attach(servable, threads=1)
    return servable, caplog.text


def test_a_corrupt_file_leaves_the_saved_model_serving(trained, tmp_path: Path, caplog):
    servable, logged = spoiled(trained, tmp_path, b"TFL3 but not a flatbuffer", caplog)
    assert servable.backend == "saved_model"
    assert "pixels.tflite not used: LiteRT cannot load" in logged
    assert servable.run(SIGNATURE, {INPUT: photos("PNG")})[SCORES].shape == (3, 3)


def test_a_file_for_other_inputs_leaves_the_saved_model_serving(trained, tmp_path, caplog):
    small = keras.Sequential([keras.Input((32, 32, 3), batch_size=1), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    servable, logged = spoiled(trained, tmp_path, pixels_model(small), caplog)
    assert servable.backend == "saved_model"
    assert "takes float32 [1, 32, 32, 3], not float32 [1, 224, 224, 3] pixels" in logged


def test_a_file_for_other_classes_leaves_the_saved_model_serving(trained, tmp_path, caplog):
    servable, logged = spoiled(trained, tmp_path, pixels_model(constant_model([0.5] * 4)),
                               caplog)
    assert servable.backend == "saved_model"
    assert "answers [9, 4] scores where the SavedModel answers [9, 3]" in logged


def test_a_file_that_disagrees_on_the_warm_up_photos_is_left_aside(trained, tmp_path, caplog):
    servable = Servable(trained.version_dir)
    (_, inputs), *_ = servable.warmup_requests()
    first = servable.run_saved_model(SIGNATURE, inputs)[SCORES][0].argmax()
    wrong = [0.0, 0.0, 0.0]
    wrong[(first + 1) % 3] = 1.0
    servable, logged = spoiled(trained, tmp_path, pixels_model(constant_model(wrong)), caplog)
    assert servable.backend == "saved_model"
    assert "gives the SavedModel's top class on" in logged and "of 9 warm-up photos" in logged


def metrics_text(url: str) -> str:
    return requests.get(f"{url}/monitoring/prometheus/metrics", timeout=10).text


def test_the_server_reports_which_backend_runs_each_version(trained, tmp_path: Path):
    """Version 1 has a good file, version 2 a corrupt one: both load and answer,
    and the log, metadata and metrics say what runs each."""
    good = served_copy(trained.version_dir, tmp_path)
    bad = Path(shutil.copytree(good, good.parent / "2"))
    (bad / ACCELERATED_FILE).write_bytes(b"corrupt")
    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "shapes" base_path: "{good.parent}" '
                      'model_platform: "tensorflow" model_version_policy { all { } } } }')
    with running([f"--model_config_file={config}",
                  "--monitoring_config_file=serving/monitoring.config"],
                 tmp_path / "server.log") as server:
        client = server.client("shapes")
        wait_until(lambda: available_versions(client) == {1, 2}, 120, "both versions")
        log = server.log()
        assert "version: 1} (2 warm-up requests); now serving it with litert " \
               f"(pixels.tflite, {os.cpu_count()} threads)" in log
        assert "version: 2} (2 warm-up requests); now serving it with its SavedModel" in log
        assert "pixels.tflite not used: LiteRT cannot load" in log
        one = requests.get(f"{server.url}/v1/models/shapes/versions/1/metadata", timeout=10)
        two = requests.get(f"{server.url}/v1/models/shapes/versions/2/metadata", timeout=10)
        assert one.json()["metadata"]["backend"] == {
            "name": "litert", "file": ACCELERATED_FILE, "signature_name": SIGNATURE}
        assert set(two.json()["metadata"]) == {"signature_def"}  # TF Serving's own shape
        metrics = metrics_text(server.url)
        gauge = ":tensorflow:serving:model_version_backend"
        assert f'{gauge}{{backend="litert",model_name="shapes",version="1"}} 1.0' in metrics
        assert f'{gauge}{{backend="saved_model",model_name="shapes",version="2"}} 1.0' \
            in metrics
        for version in (1, 2):
            answer = requests.post(f"{server.url}/v1/models/shapes/versions/{version}:predict",
                                   json={"instances": [{"b64": "aGVsbG8="}]}, timeout=30)
            assert answer.status_code == 400 and "Unknown image file format" in \
                answer.json()["error"]
