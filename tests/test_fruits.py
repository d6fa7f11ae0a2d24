"""The reference use: real fruit photos, real ImageNet weights, real accuracy."""

from __future__ import annotations

from pathlib import Path

from core.settings import get_settings


def test_fruit_model_reaches_95_percent_test_accuracy(tmp_path: Path):
    from trainer.train import Recipe, train

    result = train(get_settings().fruits_dir, tmp_path / "fruits", Recipe())
    metrics = result.metrics
    assert metrics["class_names"] == ["apple", "banana", "kiwi", "orange", "pear"]
    assert metrics["data"]["images"] == 603
    assert metrics["test"]["accuracy"] >= 0.95
    assert metrics["artifacts"]["saved_model"]["test_accuracy"] >= 0.95
    assert metrics["artifacts"]["tflite_float16"]["test_accuracy"] >= 0.95
