"""The training recipe, start to finish: check the data, split it, learn,
measure, export a new version with its report.

Fast path: the frozen backbone runs once over each photo (plus a few augmented
views of each training photo) and only the small head trains, for as many
epochs as it likes, on the cached features. Optional fine-tuning then trains
the top of the backbone on images at a low learning rate.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from trainer import data, export, report
from trainer.fit import extract_features, fit_head, fit_images
from trainer.images import decode_and_resize
from trainer.model import build_augmenter, build_base, build_head, join, unfreeze_top
from trainer.robustness import degraded_copies


@dataclass(frozen=True)
class Recipe:
    """Every knob of a training run; all of it is written into the report.

    The augmentation defaults were picked with bench/recipes.py by accuracy on
    degraded validation photos (README, "Choosing the recipe").
    """

    seed: int = 42
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    min_per_class: int = data.MIN_IMAGES_PER_CLASS
    weights: str = "imagenet"
    augmented_views: int = 2
    flip: bool = True
    rotation: float = 0.0  # fraction of a full turn; costs the most, gained nothing measurable
    zoom: float = 0.15
    contrast: float = 0.2
    blur: float = 3.0  # largest Gaussian sigma, in pixels at 224 x 224
    brightness: float = 0.3  # brightness shift, as a fraction of the 0..255 range
    dropout: float = 0.2
    epochs: int = 100  # head epochs on cached features; early stopping ends most runs
    learning_rate: float = 1e-3
    patience: int = 10
    batch_size: int = 32  # images per backbone step, and feature vectors per head step
    fine_tune: bool = False
    fine_tune_layers: int = 30  # the backbone's last layers: block_14 onwards
    fine_tune_epochs: int = 10
    fine_tune_learning_rate: float = 1e-5

    def augmentation(self) -> dict[str, float]:
        return {"flip": self.flip, "rotation": self.rotation, "zoom": self.zoom,
                "contrast": self.contrast, "blur": self.blur, "brightness": self.brightness}

    def augmenter(self, seed: int):
        return build_augmenter(**self.augmentation(), seed=seed)


@dataclass
class Result:
    version: int
    version_dir: Path
    report_dir: Path
    metrics: dict = field(repr=False)
    model: keras.Model = field(repr=False)  # the trained Keras model that was exported


def head_scores(head: keras.Model, features: np.ndarray) -> np.ndarray:
    return head.predict(features, verbose=0, batch_size=256)


def labels_of(examples: list[data.Example]) -> np.ndarray:
    return np.array([e.label for e in examples])


@dataclass
class Learned:
    head: keras.Model
    model: keras.Model  # base and head joined: pixels in, class probabilities out
    history: dict[str, list[float]]
    features: dict[str, np.ndarray]  # per split, from the final base
    head_epochs: int


def split_features(base: keras.Model, parts: data.Split) -> dict[str, np.ndarray]:
    """Features of every split in one pass over the photos."""
    named = parts.named()
    everything = extract_features(base, [e for part in named.values() for e in part],
                                  desc="features: all splits")
    bounds = np.cumsum([len(part) for part in named.values()])[:-1]
    return dict(zip(named, np.split(everything, bounds), strict=True))


def learn(base: keras.Model, parts: data.Split, num_classes: int, recipe: Recipe) -> Learned:
    """The fast path (and optional fine-tuning) from a frozen base to a trained model."""
    features = split_features(base, parts)
    views = [extract_features(base, parts.train, augmenter=recipe.augmenter(recipe.seed + 10 * v),
                              desc=f"features: augmented view {v + 1}")
             for v in range(recipe.augmented_views)]
    head = build_head(num_classes, recipe.dropout)
    history = fit_head(
        head,
        (np.concatenate([features["train"], *views]),
         np.tile(labels_of(parts.train), recipe.augmented_views + 1)),
        (features["val"], labels_of(parts.val)),
        epochs=recipe.epochs, learning_rate=recipe.learning_rate, patience=recipe.patience,
        batch_size=recipe.batch_size, seed=recipe.seed)
    model = join(base, head)
    head_epochs = len(history["loss"])
    if recipe.fine_tune:
        unfreeze_top(base, recipe.fine_tune_layers)
        tuned = fit_images(model, parts.train, parts.val, augmenter=recipe.augmenter(recipe.seed),
                           epochs=recipe.fine_tune_epochs,
                           learning_rate=recipe.fine_tune_learning_rate,
                           batch_size=recipe.batch_size, seed=recipe.seed,
                           patience=3, desc="fine-tuning")
        history = {k: history[k] + tuned[k] for k in history}
        features = split_features(base, parts)  # the backbone moved: features anew
    return Learned(head, model, history, features, head_epochs)


def degraded_accuracy(base: keras.Model, head: keras.Model,
                      test: list[data.Example]) -> dict[str, float]:
    """Test accuracy on each kind of degraded copy of the test photos."""
    truth = labels_of(test)
    return {
        kind: report.scores_summary(truth, head_scores(
            head, extract_features(base, images, desc=f"degraded test: {kind}")))["accuracy"]
        for kind, images in degraded_copies([e.path for e in test]).items()
    }


def train(data_dir: Path, model_dir: Path, recipe: Recipe, *,
          skip_bad_files: bool = False) -> Result:
    found = data.scan(data_dir)
    data.check_trainable(found, min_per_class=recipe.min_per_class, skip_bad_files=skip_bad_files)
    export.ensure_writable(model_dir)
    parts = data.split(found.examples, seed=recipe.seed, val_fraction=recipe.val_fraction,
                       test_fraction=recipe.test_fraction)
    labels = {name: labels_of(part) for name, part in parts.named().items()}
    names = found.class_names
    base = build_base(recipe.weights)

    started = time.perf_counter()
    learned = learn(base, parts, len(names), recipe)
    training_seconds = time.perf_counter() - started
    head, model, history, features = (learned.head, learned.model, learned.history,
                                      learned.features)
    scores = {name: head_scores(head, f) for name, f in features.items()}
    robustness = degraded_accuracy(base, head, parts.test)

    version, report_dir = export.reserve_version(model_dir)
    staging = export.staging_dir(model_dir, version)
    try:
        test_bytes = [e.path.read_bytes() for e in parts.test]
        export.write_saved_model(model, names, staging)
        export.write_warmup_requests(staging, model_dir.name, test_bytes)
        served = export.verify(staging, scores["test"], names, test_bytes)
        artifacts = {"saved_model": {
            "path": str(version), "bytes": export.size_on_disk(staging),
            "test_accuracy": report.scores_summary(labels["test"], served)["accuracy"]}}
        artifacts |= _tflite_files(model, parts, labels["test"], report_dir)
        metrics = {
            "model_name": model_dir.name,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "class_names": names,
            "data": {
                "root": str(found.root),
                "fingerprint": found.fingerprint(),
                "images_per_class": found.counts(),
                "images": len(found.examples),
                "bad_files_skipped": [str(b.path) for b in found.bad_files],
                "split": {name: len(part) for name, part in parts.named().items()},
            },
            "hyperparameters": asdict(recipe),
            "training_seconds": round(training_seconds, 1),
            "head_epochs": learned.head_epochs,
            **{name: report.scores_summary(labels[name], s) for name, s in scores.items()},
            "robustness": {"degraded_test_accuracy": float(np.mean(list(robustness.values()))),
                           "per_degradation": robustness},
            "artifacts": artifacts,
            "history": history,
        }
        metrics["test"] |= report.per_class(labels["test"], scores["test"], names)
        report.write_metrics(report_dir, metrics)
        report.write_split(report_dir, found.root, parts.named(), names)
        report.plot_curves(history, report_dir / "curves.png",
                           fine_tune_from=learned.head_epochs if recipe.fine_tune else None)
        report.plot_confusion(metrics["test"]["confusion_matrix"], names,
                              report_dir / "confusion_matrix.png",
                              title=f"{model_dir.name} v{version}: test split")
        version_dir = export.publish(staging, model_dir, version)
    except BaseException:
        export.discard(staging, report_dir)
        raise
    return Result(version, version_dir, report_dir, metrics, model)


def _tflite_files(model, parts: data.Split, test_labels: np.ndarray,
                  report_dir: Path) -> dict[str, dict]:
    """float16 and int8 TFLite files beside the report, with size and test accuracy."""
    test_pixels = np.stack([decode_and_resize(e.path.read_bytes()).numpy() for e in parts.test])
    calibration = np.stack([decode_and_resize(e.path.read_bytes()).numpy()
                            for e in parts.train[:100]])
    files = {}
    for quantization in tqdm(("float16", "int8"), desc="TFLite export", unit="file"):
        flatbuffer = export.tflite_model(model, quantization, calibration)
        path = report_dir / f"model_{quantization}.tflite"
        path.write_bytes(flatbuffer)
        scores = export.tflite_predict(flatbuffer, test_pixels)
        files[f"tflite_{quantization}"] = {
            "path": str(path.relative_to(report_dir.parent.parent)),
            "bytes": len(flatbuffer),
            "test_accuracy": report.scores_summary(test_labels, scores)["accuracy"],
        }
    return files
