"""Temperature scaling: top scores that mean what they say.

A head's softmax scores are not probabilities: with the L2 penalty it says
0.8 where it is right 95% of the time, and without it 0.99 on photos it gets
wrong. One temperature T divides the logits before the softmax; it changes
no answer (the order of the scores stays), only how sure the scores are. The
site's "not sure" rule (settings.uncertain_below) reads these scores.

T minimises the negative log-likelihood on the validation photos *and their
augmented views*. The plain validation split alone is often right on every
photo, and then the likelihood only grows as T shrinks: T runs to its bound
and every answer says 1.0 (measured on the fruits: T 0.06, and the NLL on
web photos 0.42 instead of 0.15). The augmented views hold a few mistakes,
as users' photos do, and give T 0.9 (NLL on web photos 0.14).

T is folded into the final Dense layer, softmax((xW + b) / T) =
softmax(x (W / T) + b / T), so the exported SavedModel, and with it TF
Serving, answers calibrated scores with no extra op.
"""

from __future__ import annotations

import keras
import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

#: Equal-width confidence bins for the expected calibration error.
BINS = 15
HEAD_LAYER = "head_scores"


def head_logits(head: keras.Model, features: np.ndarray) -> np.ndarray:
    """The final layer's logits (before its softmax), at inference: no dropout."""
    kernel, bias = head.get_layer(HEAD_LAYER).get_weights()
    return features @ kernel + bias


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    return float(-log_softmax(logits / temperature, axis=1)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T that minimises the validation NLL, searched over log T in
    [1/20, 20]; a one-dimensional convex problem, solved in milliseconds."""
    found = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))),
                            bounds=(-np.log(20.0), np.log(20.0)), method="bounded")
    return float(np.exp(found.x))


def expected_calibration_error(scores: np.ndarray, labels: np.ndarray,
                               bins: int = BINS) -> float:
    """Mean |accuracy - confidence| over confidence bins, weighted by the
    share of photos in each bin."""
    confidence = scores.max(axis=1)
    right = scores.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(right[inside].mean() - confidence[inside].mean())
    return float(error)


def calibrate(head: keras.Model, fit: tuple[np.ndarray, np.ndarray],
              features: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    """Fit T on `fit` (features, labels), fold it into `head`, and report the
    calibration error before and after on the plain val and test splits."""
    logits = {part: head_logits(head, features[part]) for part in ("val", "test")}
    temperature = fit_temperature(head_logits(head, fit[0]), fit[1])
    layer = head.get_layer(HEAD_LAYER)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel / temperature, bias / temperature])
    return {
        "temperature": round(temperature, 4),
        "bins": BINS,
        "ece_before": {part: expected_calibration_error(softmax(z, axis=1), labels[part])
                       for part, z in logits.items()},
        "ece_after": {part: expected_calibration_error(softmax(z / temperature, axis=1),
                                                       labels[part])
                      for part, z in logits.items()},
    }
