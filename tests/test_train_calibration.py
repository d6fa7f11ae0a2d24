"""Temperature scaling: fitted on validation logits, folded into the head."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from trainer.calibration import (
    calibrate,
    expected_calibration_error,
    fit_temperature,
    head_logits,
)


def overconfident(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels are drawn from softmax(logits / temperature): a model
    that is right as often as T=`temperature` says, but sure as T=1 says."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(logits / temperature, axis=1)])
    return logits, labels


def test_the_fitted_temperature_is_the_one_that_made_the_labels():
    logits, labels = overconfident(4000, 2.5, seed=1)
    assert abs(fit_temperature(logits, labels) - 2.5) < 0.25


def test_calibration_error_is_zero_when_confidence_matches_accuracy_and_large_when_not():
    scores = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(scores, np.array([0, 0, 0, 1])) < 1e-9
    assert abs(expected_calibration_error(scores, np.array([1, 1, 1, 1])) - 0.75) < 1e-9


def test_folding_the_temperature_into_the_head_softens_scores_and_keeps_answers():
    from trainer.model import build_head

    head = build_head(4, dropout=0.2)
    rng = np.random.default_rng(3)
    features = {part: rng.normal(0, 1, (600, 1280)).astype(np.float32) for part in ("val", "test")}
    kernel, bias = head.get_layer("head_scores").get_weights()
    head.get_layer("head_scores").set_weights([kernel * 20, bias])  # far too sure
    before = {part: head.predict(f, verbose=0) for part, f in features.items()}
    logits = head_logits(head, features["test"])
    labels = {part: np.array([rng.choice(4, p=p) for p in softmax(
        head_logits(head, f) / 8.0, axis=1)]) for part, f in features.items()}

    report = calibrate(head, (features["val"], labels["val"]), features, labels)

    after = head.predict(features["test"], verbose=0)
    assert report["temperature"] > 4
    assert (after.argmax(1) == before["test"].argmax(1)).all()
    assert after.max(1).mean() < before["test"].max(1).mean()
    assert report["ece_after"]["test"] < report["ece_before"]["test"] / 2
    np.testing.assert_allclose(after, softmax(logits / report["temperature"], axis=1), atol=1e-4)
