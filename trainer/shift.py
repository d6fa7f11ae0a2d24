"""Accuracy on photos from elsewhere: a labelled folder unlike the training set.

A model can score 99% on its own test split, whose photos were taken as the
training photos were, and far less on photos from the web or another shop.
`train --shift-data DIR` scores the exported version on DIR through its serving
signature (what TF Serving answers), so the report says how it holds up away
from home. DIR may hold only some of the model's classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer import data, export
from trainer.errors import DatasetError


def scan(folder: Path, class_names: list[str]) -> data.Scan:
    """The folder's photos, refused before any training if a class folder is not
    one of the model's classes or a file cannot be read."""
    found = data.scan(folder, progress=False)
    unknown = sorted(set(found.class_names) - set(class_names))
    if unknown:
        raise DatasetError(f"--shift-data class folder(s) {', '.join(unknown)} are not classes "
                           f"of the model ({', '.join(class_names)}): rename or remove them")
    if not found.examples:
        raise DatasetError(f"--shift-data folder {folder} has no readable images")
    if found.bad_files:
        first = found.bad_files[0]
        raise DatasetError(f"--shift-data: {len(found.bad_files)} unreadable file(s), e.g. "
                           f"{first.path}: {first.reason}; remove them")
    return found


def accuracy(version_dir: Path, found: data.Scan) -> dict:
    """`shift` in metrics.json: overall and per-class accuracy of the export."""
    scores, model_classes = export.predict_bytes(
        version_dir, [e.path.read_bytes() for e in found.examples])
    truth = np.array([model_classes.index(found.class_names[e.label]) for e in found.examples])
    right = scores.argmax(axis=1) == truth
    return {
        "data": str(found.root),
        "accuracy": float(right.mean()),
        "images": len(found.examples),
        "per_class": {name: {"accuracy": float(right[truth == model_classes.index(name)].mean()),
                             "images": int((truth == model_classes.index(name)).sum())}
                      for name in found.class_names},
    }
