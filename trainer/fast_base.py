"""The frozen base run by LiteRT in the feature pass, when it gives Keras's features.

The feature pass is most of a cold training run; LiteRT's XNNPACK kernels run
MobileNetV2 about three times faster than TensorFlow's on CPU (README,
Measured), the same runtime the embedded server uses. The base is converted
once per weights (the file is kept in the feature cache's folder under the
weights' fingerprint), and it stands in for the Keras base only if, on the
run's first photos, its features are within FEATURE_TOLERANCE of Keras's:
otherwise Keras runs the pass, as it always can.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import keras
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from trainer import export

#: Features are averages of ReLU6 activations, in [0, 6]; float32 kernels that
#: differ only in summation order stay far below this.
FEATURE_TOLERANCE = 1e-3


class LiteRTBase:
    """Answers `predict_on_batch` as the Keras base does (what extract_features
    calls), one image at a time: a LiteRT batch gains nothing on CPU."""

    def __init__(self, flatbuffer: bytes, threads: int = 0):
        self._interpreter = Interpreter(model_content=flatbuffer,
                                        num_threads=threads or os.cpu_count() or 1)
        self._interpreter.allocate_tensors()
        (inp,), (out,) = (self._interpreter.get_input_details(),
                          self._interpreter.get_output_details())
        self._input, self._output = inp["index"], out["index"]

    def predict_on_batch(self, pixels) -> np.ndarray:
        rows = []
        for image in np.asarray(pixels, np.float32):
            self._interpreter.set_tensor(self._input, image[np.newaxis])
            self._interpreter.invoke()
            rows.append(self._interpreter.get_tensor(self._output)[0].copy())
        return np.stack(rows)


def flatbuffer(base: keras.Model, fingerprint: str, folder: Path | None) -> bytes:
    """The base as a float32 TFLite file, read from `folder` when an earlier run
    converted the same weights."""
    kept = folder / "bases" / f"{fingerprint}.tflite" if folder is not None else None
    if kept is not None and kept.is_file():
        return kept.read_bytes()
    content = export.tflite_model(base, "float32")
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=kept.parent, prefix=".tmp-")
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        os.replace(temporary, kept)
    return content


def checked(base: keras.Model, content: bytes, pixels: np.ndarray
            ) -> tuple[LiteRTBase | None, float]:
    """(the LiteRT base, or None when its features are not Keras's; the largest
    difference on `pixels`)."""
    runner = LiteRTBase(content)
    difference = float(np.abs(runner.predict_on_batch(pixels)
                              - np.asarray(base.predict_on_batch(pixels))).max())
    return (runner if difference <= FEATURE_TOLERANCE else None), difference
