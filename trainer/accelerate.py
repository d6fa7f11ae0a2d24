"""The TFLite file the embedded server runs in place of a version's SavedModel.

TensorFlow's CPU kernels for MobileNetV2 are memory-bound; LiteRT (XNNPACK)
runs the same network several times faster. The file takes decoded pixels
(the server decodes with trainer/images.py, as the SavedModel does) and
must answer as the SavedModel does before the version is published: on the
whole test split and on photos from elsewhere, as core/contract.py says (0.5
accuracy points apart at most, the same top class on 99% of photos). int8
is tried first (the fastest); float32 keeps the trained weights. A version
whose files all fail is published without one, and is served as a
SavedModel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from core.contract import (
    ACCELERATED_FILE,
    ACCELERATED_MAX_POINTS_APART,
    ACCELERATED_MIN_SAME_TOP,
)
from trainer import data, export
from trainer.images import decode_batch

#: Fastest first: the first that passes the check is the one served.
QUANTIZATIONS = ("int8", "float32")


@dataclass(frozen=True)
class Photos:
    """One set of check photos: files, their class indices (-1 where the folder
    is not a class of the model) and the SavedModel's scores for them."""

    name: str
    files: list[bytes]
    labels: np.ndarray
    served: np.ndarray


def elsewhere(folder: Path | None, class_names: Sequence[str], saved_model_dir: Path
              ) -> Photos | None:
    """The readable photos of `folder` (a folder per class; classes the model lacks
    still count for agreement), or None when there is no such folder."""
    if folder is None or not Path(folder).is_dir():
        return None
    found = data.scan(folder, progress=False)
    if not found.examples:
        return None
    files = [e.path.read_bytes() for e in found.examples]
    labels = np.array([class_names.index(found.class_names[e.label])
                       if found.class_names[e.label] in class_names else -1
                       for e in found.examples])
    served, _ = export.predict_bytes(saved_model_dir, files)
    return Photos(str(Path(folder).resolve()), files, labels, served)


def compare(scores: np.ndarray, photos: Photos) -> dict:
    """How far the file's answers are from the SavedModel's on one photo set."""
    same_top = float(np.mean(scores.argmax(1) == photos.served.argmax(1)))
    known = photos.labels >= 0
    figures = {"photos": len(photos.files), "same_top_class": same_top,
               "max_score_difference": float(np.abs(scores - photos.served).max())}
    if known.any():
        truth = photos.labels[known]
        accuracy = float(np.mean(scores[known].argmax(1) == truth))
        served = float(np.mean(photos.served[known].argmax(1) == truth))
        figures |= {"accuracy": accuracy, "saved_model_accuracy": served,
                    "accuracy_points_apart": round(abs(accuracy - served) * 100, 2)}
    apart = figures.get("accuracy_points_apart", 0)
    figures["passed"] = (same_top >= ACCELERATED_MIN_SAME_TOP
                         and apart <= ACCELERATED_MAX_POINTS_APART)
    return figures


def pixels(files: Sequence[bytes]) -> np.ndarray:
    return np.concatenate([decode_batch(tf.constant(list(files[i:i + 32]))).numpy()
                           for i in range(0, len(files), 32)])


def write(model: keras.Model, saved_model_dir: Path, checks: Sequence[Photos],
          calibration: np.ndarray) -> dict:
    """Writes ACCELERATED_FILE into `saved_model_dir` (the staging version) if a
    quantization passes on every photo set; returns the report's entry for it."""
    decoded = [pixels(photos.files) for photos in checks]
    tried = {}
    for quantization in QUANTIZATIONS:
        flatbuffer = export.tflite_model(model, quantization, calibration)
        figures = {photos.name: compare(export.tflite_predict(flatbuffer, x), photos)
                   for photos, x in zip(checks, decoded, strict=True)}
        passed = all(f["passed"] for f in figures.values())
        tried[quantization] = {"bytes": len(flatbuffer), "passed": passed, "checks": figures}
        if passed:
            (saved_model_dir / ACCELERATED_FILE).write_bytes(flatbuffer)
            return {"file": ACCELERATED_FILE, "quantization": quantization, "tried": tried}
    return {"file": None, "quantization": None, "tried": tried}
