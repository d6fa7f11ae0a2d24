"""`python -m trainer` as a user runs it: help, stats, evaluate, and every
kind of bad input answered with one line, a non-zero exit and no half-written
model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import make_dataset

ROOT = Path(__file__).resolve().parent.parent


def trainer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("command", [[], ["stats"], ["train"], ["evaluate"]])
def test_every_command_has_help(command):
    done = trainer(*command, "--help")
    assert done.returncode == 0 and "usage: python -m trainer" in done.stdout


def test_stats_counts_images_and_flags_bad_files_and_small_classes(tmp_path: Path):
    root = make_dataset(tmp_path, {"circle": 12, "square": 4})
    (root / "square" / "broken.png").write_bytes(b"\x89PNG nope")
    done = trainer("stats", root)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.split()[:2] == ["circle", "12"] for line in lines)
    assert any(line.split()[:2] == ["square", "4"] and "too few" in line for line in lines)
    assert any(line.split()[:2] == ["total", "16"] for line in lines)
    assert f"{root / 'square' / 'broken.png'}: cannot be decoded" in done.stdout


def test_stats_refuses_a_missing_folder_with_one_line(tmp_path: Path):
    done = trainer("stats", tmp_path / "nowhere")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error: data set folder")
    assert "does not exist" in done.stderr


def assert_refused(done: subprocess.CompletedProcess, message: str, model_dir: Path) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    leftovers = [p for p in model_dir.rglob("*")] if model_dir.exists() else []
    assert [p for p in leftovers if p.name != "reports"] == []


def _one_class(tmp: Path) -> Path:
    return make_dataset(tmp / "d", {"circle": 12})


def _too_few(tmp: Path) -> Path:
    return make_dataset(tmp / "d", {"circle": 12, "square": 12, "triangle": 2})


def _corrupt(tmp: Path) -> Path:
    root = make_dataset(tmp / "d", {"circle": 12, "square": 12})
    (root / "circle" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


@pytest.mark.parametrize("make_data, message", [
    (lambda tmp: tmp / "nowhere", "does not exist"),
    (lambda tmp: tmp, "no class folders"),
    (_one_class, "only one class"),
    (_too_few, "too few images in class(es) triangle (2)"),
    (_corrupt, "remove them or pass --skip-bad-files"),
], ids=["missing", "empty", "one-class", "too-few", "corrupt"])
def test_train_refuses_bad_data_sets(tmp_path: Path, make_data, message):
    data_dir = make_data(tmp_path)
    model_dir = tmp_path / "models" / "m"
    done = trainer("train", "--data", data_dir, "--out", tmp_path / "models", "--name", "m")
    assert_refused(done, message, model_dir)


def test_train_refuses_an_unwritable_output_folder(tmp_path: Path, shapes_dir: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder should be")
    done = trainer("train", "--data", shapes_dir, "--out", blocker, "--name", "m")
    assert_refused(done, "cannot write to", blocker / "m")


def test_train_refuses_a_missing_weights_file(tmp_path: Path, shapes_dir: Path):
    done = trainer("train", "--data", shapes_dir, "--out", tmp_path, "--name", "m",
                   "--weights", tmp_path / "nope.h5")
    assert_refused(done, "nope.h5 does not exist", tmp_path / "m")


def test_train_never_falls_back_to_random_weights_when_imagenet_is_missing(
        tmp_path: Path, shapes_dir: Path):
    empty_cache = tmp_path / "keras"
    (empty_cache / "models").mkdir(parents=True)
    done = trainer("train", "--data", shapes_dir, "--out", tmp_path, "--name", "m",
                   env={"KERAS_HOME": str(empty_cache)})
    assert_refused(done, "ImageNet weights are not in the Keras cache", tmp_path / "m")


def test_train_refuses_a_bad_model_name(tmp_path: Path, shapes_dir: Path):
    done = trainer("train", "--data", shapes_dir, "--out", tmp_path, "--name", "../up")
    assert done.returncode == 2 and "is not a model name" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_train_with_a_local_weights_file_exports_a_version(tmp_path: Path, shapes_dir: Path,
                                                          keras_home: Path):
    weights = next((keras_home / "models").iterdir())
    done = trainer("train", "--data", shapes_dir, "--out", tmp_path, "--name", "m",
                   "--weights", weights, "--epochs", "3", "--augmented-views", "0",
                   "--feature-cache", tmp_path / "features",
                   "--shift-data", make_dataset(tmp_path / "elsewhere", {"square": 3}))
    assert done.returncode == 0, done.stderr
    assert "exported m version 1" in done.stdout and "tflite_int8" in done.stdout
    assert (tmp_path / "m" / "1" / "saved_model.pb").is_file()
    assert "elsewhere: " in done.stdout and "square" in done.stdout
    assert "calibration: temperature" in done.stdout
    assert list((tmp_path / "features").rglob("*.npy"))
    assert ", by LiteRT (within " in done.stdout  # the feature pass's default runtime
    assert "accelerated file: pixels.tflite" in done.stdout


def test_train_refuses_photos_from_elsewhere_of_another_class_before_training(
        tmp_path: Path, shapes_dir: Path):
    done = trainer("train", "--data", shapes_dir, "--out", tmp_path / "out", "--name", "m",
                   "--no-feature-cache",
                   "--shift-data", make_dataset(tmp_path / "elsewhere", {"hexagon": 3}))
    assert done.returncode == 2 and "hexagon are not classes of the model" in done.stderr
    assert not (tmp_path / "out" / "m" / "reports").exists()


def test_evaluate_scores_a_version_on_a_labelled_folder(trained, tmp_path: Path):
    data_dir = make_dataset(tmp_path / "fresh", {"square": 4, "triangle": 4})
    out = tmp_path / "eval"
    done = trainer("evaluate", "--model", trained.version_dir, "--data", data_dir, "--out", out)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["images"] == 8
    assert metrics["class_names"] == ["circle", "square", "triangle"]
    assert sum(map(sum, metrics["confusion_matrix"])) == 8
    assert metrics["accuracy"] >= 0.75 and (out / "confusion_matrix.png").is_file()
    assert "accuracy" in done.stdout


def test_evaluate_refuses_unknown_classes_and_non_model_folders(trained, tmp_path: Path):
    data_dir = make_dataset(tmp_path / "other", {"circle": 3, "hexagon": 3})
    done = trainer("evaluate", "--model", trained.version_dir, "--data", data_dir)
    assert done.returncode == 2 and "hexagon are not classes of this model" in done.stderr
    done = trainer("evaluate", "--model", tmp_path, "--data", data_dir)
    assert done.returncode == 2 and "is not an exported version" in done.stderr
    shutil.rmtree(data_dir)
