"""A version's ACCELERATED_FILE, run by LiteRT in place of its SavedModel's network.

The trainer writes the file beside the SavedModel once it has checked it
answers as the SavedModel does (trainer/accelerate.py). The server decodes
each request's image_bytes with the very function the SavedModel was traced
from (trainer/images.py), runs the pixels through LiteRT's XNNPACK kernels,
and answers the signature's scores and classes. Every other signature, and
every version without the file, is the SavedModel's.

At load the file must answer the version's warm-up photos as its SavedModel
does (same top class); one that fails to load or to agree is logged and
left aside, and the version is served by its SavedModel.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from core.contract import ACCELERATED_FILE, ACCELERATED_MIN_SAME_TOP, CLASSES, INPUT, SCORES
from core.contract import SIGNATURE as DEFAULT_SIGNATURE
from serving.servable import Servable, tf_errors
from trainer.images import IMAGE_SHAPE, decode_batch

log = logging.getLogger(__name__)

BACKEND = "litert"


class AcceleratorError(Exception):
    """Why a version's file is not used; the SavedModel serves it instead."""


class Accelerator:
    """The default signature of one version through LiteRT. Thread-safe: one
    interpreter, one image at a time, each on `threads` cores (batching a
    LiteRT call gains nothing on CPU; decoding a batch runs photos in parallel)."""

    name = BACKEND

    def __init__(self, servable: Servable, threads: int):
        path = servable.path / ACCELERATED_FILE
        self.file = ACCELERATED_FILE
        self.threads = threads or os.cpu_count() or 1
        try:
            self._interpreter = Interpreter(model_path=str(path), num_threads=self.threads)
            self._interpreter.allocate_tensors()
        except (OSError, RuntimeError, ValueError) as exc:
            raise AcceleratorError(f"LiteRT cannot load {path}: {exc}") from exc
        (inp,), (out,) = (self._interpreter.get_input_details(),
                          self._interpreter.get_output_details())
        if tuple(inp["shape"]) != (1, *IMAGE_SHAPE) or inp["dtype"] != np.float32:
            raise AcceleratorError(f"{path} takes {inp['dtype'].__name__} {inp['shape'].tolist()}, "
                                   f"not float32 {[1, *IMAGE_SHAPE]} pixels")
        self._input, self._output = inp["index"], out["index"]
        self._lock = threading.Lock()
        self._decode = tf.function(decode_batch,
                                   input_signature=[tf.TensorSpec([None], tf.string)])
        self.classes = self._check(servable)

    def describe(self) -> str:
        return f"{self.name} ({self.file}, {self.threads} threads)"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        scores = self.scores(self.decode(inputs[INPUT]))
        return {SCORES: scores, CLASSES: np.tile(self.classes, (len(scores), 1))}

    def decode(self, encoded: np.ndarray) -> np.ndarray:
        """[N] encoded files -> [N, 224, 224, 3] pixels, as the SavedModel decodes them."""
        with tf_errors():
            return self._decode(tf.constant(encoded, tf.string)).numpy()

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        rows = []
        with self._lock:
            for image in pixels:
                self._interpreter.set_tensor(self._input, image[np.newaxis])
                self._interpreter.invoke()
                rows.append(self._interpreter.get_tensor(self._output)[0].copy())
        return np.stack(rows) if rows else np.zeros((0, len(self.classes)), np.float32)

    def _check(self, servable: Servable) -> np.ndarray:
        """The SavedModel's class names, once the file agrees with it on the warm-up
        photos (or on one blank image, for a version without warm-up requests)."""
        photos = [inputs[INPUT] for signature, inputs in servable.warmup_requests()
                  if signature == DEFAULT_SIGNATURE and set(inputs) == {INPUT}]
        encoded = (np.concatenate(photos) if photos else
                   np.array([tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)).numpy()], object))
        expected = servable.run_saved_model(DEFAULT_SIGNATURE, {INPUT: encoded})
        scores = self.scores(self.decode(encoded))
        if scores.shape != expected[SCORES].shape or not np.isfinite(scores).all():
            raise AcceleratorError(f"{self.file} answers {list(scores.shape)} scores where "
                                   f"the SavedModel answers {list(expected[SCORES].shape)}")
        same = float(np.mean(scores.argmax(1) == expected[SCORES].argmax(1)))
        if same < ACCELERATED_MIN_SAME_TOP:
            raise AcceleratorError(f"{self.file} gives the SavedModel's top class on "
                                   f"{same:.0%} of {len(scores)} warm-up photos")
        return expected[CLASSES][0]


def attach(servable: Servable, threads: int) -> None:
    """Runs `servable`'s default signature through its version's file, if it has
    one that loads and agrees; otherwise leaves the SavedModel, saying why."""
    if not (servable.path / ACCELERATED_FILE).is_file():
        return
    try:
        servable.accelerator = Accelerator(servable, threads)
    except AcceleratorError as exc:
        log.warning("%s not used: %s; serving the SavedModel", ACCELERATED_FILE, exc)
