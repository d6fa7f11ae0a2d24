"""The reference use: real fruit photos, real ImageNet weights, real accuracy."""

from __future__ import annotations


def test_fruit_model_reaches_95_percent_test_accuracy(fruit_model):
    metrics = fruit_model.metrics
    assert metrics["class_names"] == ["apple", "banana", "kiwi", "orange", "pear"]
    assert metrics["data"]["images"] == 603
    assert metrics["test"]["accuracy"] >= 0.95
    assert metrics["artifacts"]["saved_model"]["test_accuracy"] >= 0.95
    assert metrics["artifacts"]["tflite_float16"]["test_accuracy"] >= 0.95
