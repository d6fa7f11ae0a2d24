"""The frozen base's features of each photo, kept on disk between runs.

A training run learns from the base photos plus whatever reviewers added, so
most photos were seen by an earlier run with the same frozen base. Each
feature vector is stored under a key made of the photo's content (SHA-256 of
its bytes), the base's weights (a hash of its weight arrays) and the view: the
plain photo, one augmented view (its parameters, seed and index) or one
degraded copy. A changed file, other weights or another augmentation is a
new key, so a stale vector is never read back; only missing photos go
through the base, in one pass.

Entries are single .npy files written to a temporary name and renamed into
place, so concurrent trainers share the folder safely: the worst case is the
same vector computed twice.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from trainer import fast_base
from trainer.data import Example, file_sha256
from trainer.fit import extract_features, image_dataset


def weights_fingerprint(model: keras.Model) -> str:
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Features by (photo content, base weights, view); `folder=None` keeps
    nothing and computes every time. `runtime="litert"` runs the base through
    LiteRT where its features are Keras's (fast_base.py)."""

    def __init__(self, folder: Path | None, runtime: str = "keras"):
        self.folder = Path(folder) if folder is not None else None
        self.runtime = runtime
        self._fingerprints: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._runners: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.computed = 0  # photos that went through the base, for reports and tests
        #: What ran the base, and LiteRT's largest feature difference from Keras.
        self.used: dict[str, object] = {"runtime": "keras"}

    def fingerprint(self, base: keras.Model) -> str:
        """Computed once per base object: the frozen base's weights do not change
        while it is frozen (after fine-tuning, use a cache without a folder)."""
        if base not in self._fingerprints:
            self._fingerprints[base] = weights_fingerprint(base)
        return self._fingerprints[base]

    def _entry(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def features(self, base: keras.Model, examples: Sequence[Example], *, view: str,
                 augmenter: keras.Model | None = None, desc: str,
                 progress: Callable[[float], None] | None = None,
                 render: Callable[[Path], bytes] | None = None) -> np.ndarray:
        """[N, 1280] features of `examples` in order. `render` turns a photo's
        file into the bytes the base sees (a degraded copy); the key stays the
        file's hash with `view` naming the rendering."""
        if not examples:
            return np.zeros((0, base.output_shape[-1]), np.float32)
        if self.folder is None:
            return self._compute(base, list(examples), augmenter, desc, progress, render)
        weights = self.fingerprint(base)
        keys = [hashlib.sha256(f"{file_sha256(e.path)}:{weights}:{view}".encode()).hexdigest()
                for e in examples]
        found: dict[int, np.ndarray] = {}
        for i, key in enumerate(keys):
            try:
                found[i] = np.load(self._entry(key))
            except (OSError, ValueError):  # missing, or cut short by a crash
                continue
        missing = [i for i in range(len(examples)) if i not in found]
        if missing:
            fresh = self._compute(base, [examples[i] for i in missing], augmenter, desc,
                                  progress, render)
            for i, vector in zip(missing, fresh, strict=True):
                found[i] = vector
                self._store(keys[i], vector)
        elif progress is not None:
            progress(1.0)
        return np.stack([found[i] for i in range(len(examples))]).astype(np.float32)

    def _compute(self, base, examples, augmenter, desc, progress, render) -> np.ndarray:
        self.computed += len(examples)
        images = [render(e.path) for e in examples] if render is not None else examples
        return extract_features(self._runner(base, images), images, desc=desc,
                                augmenter=augmenter, progress=progress)

    def _runner(self, base: keras.Model, images: Sequence) -> object:
        """The base itself, or its LiteRT stand-in once checked on these photos."""
        if self.runtime != "litert":
            return base
        if base not in self._runners:
            content = fast_base.flatbuffer(base, self.fingerprint(base), self.folder)
            sample = next(iter(image_dataset(images[:8], 8))).numpy()
            runner, difference = fast_base.checked(base, content, sample)
            self._runners[base] = runner or base
            self.used = {"runtime": "litert" if runner else "keras",
                         "litert_max_difference": difference}
        return self._runners[base]

    def _store(self, key: str, vector: np.ndarray) -> None:
        entry = self._entry(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".npy")
        try:
            with os.fdopen(handle, "wb") as file:
                np.save(file, vector)
            os.replace(temporary, entry)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
