"""The exported SavedModel: what TF Serving will load and answer."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.factories import draw_photo, encoded
from trainer import export


def keras_scores(model, photos: list[Image.Image]) -> np.ndarray:
    """The Keras model's answer, with pixels decoded by Pillow rather than by
    the graph, so the export's own decoding is checked independently."""
    pixels = np.stack([
        tf.image.resize(np.asarray(p.convert("RGB"), np.float32), (224, 224), antialias=True)
        for p in photos
    ])
    return model.predict(pixels, verbose=0)


def test_only_finished_versions_and_their_reports_are_in_the_model_folder(trained):
    model_dir = trained.version_dir.parent
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "reports"]
    assert trained.version == 1
    assert (trained.version_dir / "saved_model.pb").is_file()
    assert trained.report_dir == model_dir / "reports" / "1"


def test_serving_default_takes_image_bytes_and_returns_scores_and_classes(trained):
    signature = tf.saved_model.load(str(trained.version_dir)).signatures["serving_default"]
    (inputs,), outputs = signature.structured_input_signature[1].values(), \
        signature.structured_outputs
    assert inputs.name == "image_bytes" and inputs.dtype == tf.string
    assert inputs.shape.as_list() == [None]
    assert outputs["scores"].dtype == tf.float32 and outputs["classes"].dtype == tf.string
    assert outputs["scores"].shape.as_list() == [None, 3]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
def test_export_answers_raw_image_bytes_like_the_keras_model(trained, fmt):
    files = [encoded(draw_photo(kind, seed=90_000 + i), fmt) for i, kind in
             enumerate(["circle", "square", "triangle", "circle"])]
    served, classes = export.predict_bytes(trained.version_dir, files)
    expected = keras_scores(trained.model, [Image.open(io.BytesIO(f)) for f in files])
    assert classes == ["circle", "square", "triangle"]
    # TF's and Pillow's JPEG decoders round a few pixels differently (their IDCTs
    # differ); lossless formats decode to identical pixels.
    np.testing.assert_allclose(served, expected, atol=1e-2 if fmt == "JPEG" else 2e-3)
    assert (served.argmax(1) == expected.argmax(1)).all()
    assert list(served.argmax(1)) == [0, 1, 2, 0]  # and the answers are right


def test_classes_output_repeats_the_class_names_for_every_image(trained):
    serve = tf.saved_model.load(str(trained.version_dir)).signatures["serving_default"]
    out = serve(image_bytes=tf.constant([encoded(draw_photo("square", 5), "PNG")] * 2))
    assert out["classes"].numpy().tolist() == [[b"circle", b"square", b"triangle"]] * 2
    np.testing.assert_allclose(out["scores"].numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_report_holds_metrics_split_lists_plots_and_tflite_files(trained, shapes_dir: Path):
    report = trained.report_dir
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["version"] == 1 and metrics["class_names"] == ["circle", "square", "triangle"]
    for part in ("train", "val", "test"):
        assert 0.0 <= metrics[part]["accuracy"] <= 1.0 and metrics[part]["loss"] >= 0
    test = metrics["test"]
    assert set(test["per_class"]) == {"circle", "square", "triangle"}
    assert sum(map(sum, test["confusion_matrix"])) == metrics["data"]["split"]["test"]
    assert metrics["data"]["images"] == 42 and len(metrics["data"]["fingerprint"]) == 64
    assert set(metrics["robustness"]["per_degradation"]) == {"small", "blur", "jpeg", "crop",
                                                             "dim"}
    assert metrics["hyperparameters"]["augmented_views"] == 1
    assert metrics["training_seconds"] > 0
    assert len(metrics["history"]["val_loss"]) == metrics["head_epochs"]

    listed = []
    for part in ("train", "val", "test"):
        lines = (report / f"{part}.txt").read_text().splitlines()
        assert len(lines) == metrics["data"]["split"][part]
        listed += [line.split("\t")[1] for line in lines]
    assert sorted(listed) == sorted(str(p.relative_to(shapes_dir))
                                    for p in shapes_dir.rglob("*.*"))

    for plot in ("curves.png", "confusion_matrix.png"):
        assert (report / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = metrics["artifacts"]["saved_model"]
    assert saved["bytes"] == export.size_on_disk(trained.version_dir)
    for quantization in ("float16", "int8"):
        entry = metrics["artifacts"][f"tflite_{quantization}"]
        path = report / f"model_{quantization}.tflite"
        assert entry["bytes"] == path.stat().st_size < saved["bytes"]
        assert 0.0 <= entry["test_accuracy"] <= 1.0


def test_tflite_files_answer_like_the_keras_model(trained):
    photos = [draw_photo(kind, seed=70_000 + i) for i, kind in enumerate(["circle", "triangle"])]
    pixels = np.stack([np.asarray(tf.image.resize(np.asarray(p, np.float32), (224, 224),
                                                  antialias=True)) for p in photos])
    expected = trained.model.predict(pixels, verbose=0)
    half = export.tflite_predict((trained.report_dir / "model_float16.tflite").read_bytes(), pixels)
    np.testing.assert_allclose(half, expected, atol=0.02)
    quarter = export.tflite_predict((trained.report_dir / "model_int8.tflite").read_bytes(), pixels)
    assert (quarter.argmax(1) == expected.argmax(1)).all()


def test_a_failed_export_leaves_no_version_and_no_report(tmp_path: Path, shapes_dir: Path,
                                                         monkeypatch):
    from trainer.recipe import Recipe
    from trainer.train import train

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "verify", broken)
    model_dir = tmp_path / "shapes"
    with pytest.raises(RuntimeError, match="disk full"):
        train(shapes_dir, model_dir, Recipe(epochs=2, augmented_views=0))
    assert [p.name for p in model_dir.iterdir()] == ["reports"]
    assert list((model_dir / "reports").iterdir()) == []


def test_fine_tuning_trains_the_top_blocks_and_still_exports_a_checked_version(
        tmp_path: Path, shapes_dir: Path):
    from trainer.model import build_base
    from trainer.recipe import Recipe
    from trainer.train import train

    recipe = Recipe(epochs=3, augmented_views=0, fine_tune=True, fine_tune_epochs=2,
                    fine_tune_layers=10)
    result = train(shapes_dir, tmp_path / "tuned", recipe)
    backbone = result.model.get_layer("features").get_layer("mobilenetv2_1.00_224")
    pretrained = build_base("imagenet").get_layer("mobilenetv2_1.00_224")
    moved = [mine.name for mine, theirs in zip(backbone.layers, pretrained.layers, strict=True)
             if any(not np.allclose(a, b) for a, b in
                    zip(mine.get_weights(), theirs.get_weights(), strict=True))]
    top = {layer.name for layer in backbone.layers[-10:]}
    assert moved and set(moved) <= top  # the top blocks only ...
    assert not any(name.endswith(("_bn", "_BN")) for name in moved)  # ... BatchNorm kept
    history = result.metrics["history"]["loss"]
    assert len(history) == result.metrics["head_epochs"] + 2
    assert (result.report_dir / "curves.png").is_file() and result.version == 1
