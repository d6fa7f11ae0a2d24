"""The training recipe, start to finish: check the data, split it, learn,
measure, export a new version with its report.

Fast path: the frozen backbone runs once over each photo (plus a few augmented
views of each training photo) and only the small head trains, for as many
epochs as it likes, on the cached features. Optional fine-tuning then trains
the top of the backbone on images at a low learning rate.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from core import model_files
from core.training import Phase
from trainer import accelerate, data, export, report, shift
from trainer.calibration import calibrate
from trainer.features import FeatureCache
from trainer.fit import fit_head, fit_images
from trainer.model import build_base, build_head, join, unfreeze_top
from trainer.progress import EpochProgress, Progress, Shares, Silent
from trainer.recipe import Recipe
from trainer.robustness import DEGRADATIONS, degrade


@dataclass
class Result:
    version: int
    version_dir: Path
    report_dir: Path
    metrics: dict = field(repr=False)
    model: keras.Model = field(repr=False)  # the trained Keras model that was exported
    parts: data.Split = field(repr=False)  # the base photos' split (reviewed photos not in it)
    class_names: list[str] = field(default_factory=list)
    base: keras.Model | None = field(default=None, repr=False)  # frozen: reusable for features
    recipe: Recipe | None = None


def head_scores(head: keras.Model, features: np.ndarray) -> np.ndarray:
    return head.predict(features, verbose=0, batch_size=256)


def labels_of(examples: Sequence[data.Example]) -> np.ndarray:
    return np.array([e.label for e in examples], dtype=np.int64)


@dataclass
class Learned:
    head: keras.Model
    model: keras.Model  # base and head joined: pixels in, class probabilities out
    history: dict[str, list[float]]
    features: dict[str, np.ndarray]  # per split, from the final base
    degraded: dict[str, np.ndarray]  # per degradation, of the test photos
    head_epochs: int
    calibration: dict | None


def view_features(base: keras.Model, examples: Sequence[data.Example], recipe: Recipe,
                  cache: FeatureCache, *, plain_only: bool = False) -> list[np.ndarray]:
    """[plain, augmented view 1, ...] features of `examples`, each [N, 1280]:
    the rows a head trains on (the gate's folds call it for their photos too)."""
    plain = cache.features(base, examples, view="plain", desc="features: plain")
    return [plain, *([] if plain_only else augmented_views(base, examples, recipe, cache))]


def augmented_views(base: keras.Model, examples: Sequence[data.Example], recipe: Recipe,
                    cache: FeatureCache, shares: Shares | None = None) -> list[np.ndarray]:
    return [cache.features(base, examples, view=recipe.view_name(v),
                           augmenter=recipe.view_augmenter(v),
                           desc=f"features: augmented view {v + 1}",
                           progress=shares.of(1 + v) if shares else None)
            for v in range(recipe.augmented_views)]


def all_features(base: keras.Model, parts: data.Split, recipe: Recipe, cache: FeatureCache,
                 progress: Progress, degraded: bool = True) -> tuple[dict, list, dict]:
    """Every feature the run needs, before the head trains: the splits (one
    pass), the augmented views of the training and validation photos, and
    degraded test copies."""
    named = parts.named()
    everything = [e for part in named.values() for e in part]
    shares = Shares(progress, Phase.FEATURES, [len(everything)]
                    + [len(parts.train) + len(parts.val)] * recipe.augmented_views
                    + [len(parts.test)] * (len(DEGRADATIONS) if degraded else 0))
    plain = cache.features(base, everything, view="plain", desc="features: all splits",
                           progress=shares.of(0))
    bounds = np.cumsum([len(part) for part in named.values()])[:-1]
    features = dict(zip(named, np.split(plain, bounds), strict=True))
    # The validation photos' views are calibration's (calibration.py says why).
    views = augmented_views(base, parts.train + parts.val, recipe, cache, shares)
    copies = {kind: cache.features(base, parts.test, view=f"degraded-{kind}",
                                   render=lambda path, kind=kind: degrade(path, kind),
                                   desc=f"features: degraded test, {kind}",
                                   progress=shares.of(1 + recipe.augmented_views + i))
              for i, kind in enumerate(DEGRADATIONS if degraded else ())}
    return features, views, copies


def learn(base: keras.Model, parts: data.Split, num_classes: int, recipe: Recipe, *,
          cache: FeatureCache | None = None, progress: Progress | None = None,
          degraded: bool = True) -> Learned:
    """The fast path (and optional fine-tuning) from a frozen base to a trained,
    calibrated model; `degraded=False` leaves out the degraded test copies'
    features (scoring, not learning: bench/train_speed.py times learning)."""
    cache = cache or FeatureCache(None)
    progress = progress or Silent()
    features, views, copies = all_features(base, parts, recipe, cache, progress, degraded)
    head = build_head(num_classes, recipe.dropout, recipe.l2)
    progress.phase(Phase.HEAD, 0.0)
    train_rows = len(parts.train)
    history = fit_head(
        head,
        (np.concatenate([features["train"], *(v[:train_rows] for v in views)]),
         np.tile(labels_of(parts.train), recipe.augmented_views + 1)),
        (features["val"], labels_of(parts.val)),
        epochs=recipe.epochs, learning_rate=recipe.learning_rate, patience=recipe.patience,
        batch_size=recipe.head_batch_size, seed=recipe.seed,
        label_smoothing=recipe.label_smoothing, callbacks=[EpochProgress(progress, recipe.epochs)])
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
        # The backbone moved: features anew (calibration reads the views), none cached.
        features, views, copies = all_features(base, parts, recipe, FeatureCache(None),
                                               Silent(), degraded)
    progress.phase(Phase.HEAD, 1.0)
    calibration = None
    if recipe.calibrate:
        progress.phase(Phase.CALIBRATION, 0.0)
        val_views = [features["val"], *(v[train_rows:] for v in views)]
        calibration = calibrate(
            head, (np.concatenate(val_views), np.tile(labels_of(parts.val), len(val_views))),
            features, {name: labels_of(part) for name, part in parts.named().items()})
        progress.phase(Phase.CALIBRATION, 1.0)
    return Learned(head, model, history, features, copies, head_epochs, calibration)


def train(data_dir: Path, model_dir: Path, recipe: Recipe, *,
          skip_bad_files: bool = False, extra: Sequence[data.Example] = (),
          progress: Progress | None = None, cache: FeatureCache | None = None,
          candidate: bool = False, shift_data: Path | None = None,
          check_data: Path | None = None) -> Result:
    """Train, check and publish one version: `model_dir/<N>/`, or
    `model_dir/candidates/<N>/` for a `candidate` the gate decides on.

    `extra` (reviewed photos) join the training split only, so validation and
    test stay the base photos' split from one version to the next. The
    accelerated file is checked on the test split and on `check_data`, photos
    from elsewhere, when that folder exists.
    """
    progress = progress or Silent()
    cache = cache or FeatureCache(None)
    progress.phase(Phase.CHECKING, 0.0)
    found = data.scan(data_dir)
    data.check_trainable(found, min_per_class=recipe.min_per_class, skip_bad_files=skip_bad_files)
    names = found.class_names
    extra = data.check_examples(extra, names)
    shifted = shift.scan(shift_data, names) if shift_data is not None else None
    export.ensure_writable(model_dir)
    parts = data.split(found.examples, seed=recipe.seed, val_fraction=recipe.val_fraction,
                       test_fraction=recipe.test_fraction)
    learning = data.Split(parts.train + extra, parts.val, parts.test)
    labels = {name: labels_of(part) for name, part in learning.named().items()}
    base = build_base(recipe.weights)
    progress.phase(Phase.CHECKING, 1.0)

    started = time.perf_counter()
    learned = learn(base, learning, len(names), recipe, cache=cache, progress=progress)
    training_seconds = time.perf_counter() - started
    head, model, history, features = (learned.head, learned.model, learned.history,
                                      learned.features)
    scores = {name: head_scores(head, f) for name, f in features.items()}
    robustness = {kind: report.scores_summary(labels["test"], head_scores(head, f))["accuracy"]
                  for kind, f in learned.degraded.items()}

    version, report_dir = export.reserve_version(model_dir)
    staging = model_files.staging_dir(model_dir, version)
    try:
        progress.reserved(version)
        progress.phase(Phase.EXPORT, 0.0)
        test_bytes = [e.path.read_bytes() for e in parts.test]
        export.write_saved_model(model, names, staging)
        export.write_warmup_requests(staging, model_dir.name, test_bytes)
        progress.phase(Phase.EXPORT, 0.3)
        served = export.verify(staging, scores["test"], names, test_bytes)
        progress.phase(Phase.EXPORT, 0.5)
        accelerated = None
        if recipe.accelerated:
            checks = [accelerate.Photos("test", test_bytes, labels["test"], served)]
            checks += [p for p in [accelerate.elsewhere(check_data, names, staging)] if p]
            accelerated = accelerate.write(model, staging, checks,
                                           export.calibration_pixels(parts))
        progress.phase(Phase.EXPORT, 0.65)
        artifacts = {"saved_model": {  # the version folder, its pixels file included
            "path": str(publish_path(version, candidate)),
            "bytes": export.size_on_disk(staging),
            "test_accuracy": report.scores_summary(labels["test"], served)["accuracy"]}}
        if recipe.tflite:
            artifacts |= export.tflite_files(model, parts, labels["test"], report_dir)
        progress.phase(Phase.EXPORT, 0.8)
        metrics = {
            "model_name": model_dir.name,
            "version": version,
            "candidate": candidate,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "class_names": names,
            "data": {
                "root": str(found.root),
                "fingerprint": found.fingerprint(),
                "images_per_class": found.counts(),
                "images": len(found.examples),
                "reviewed_images": len(extra),
                "bad_files_skipped": [str(b.path) for b in found.bad_files],
                "split": {name: len(part) for name, part in learning.named().items()},
            },
            "hyperparameters": asdict(recipe),
            "training_seconds": round(training_seconds, 1),
            "features_computed": cache.computed,
            "features_runtime": cache.used,
            "head_epochs": learned.head_epochs,
            **{name: report.scores_summary(labels[name], s) for name, s in scores.items()},
            "calibration": learned.calibration,
            # After calibration, as Serving answers: what drift is measured against.
            "reference": report.reference(scores["val"], names),
            "robustness": {"degraded_test_accuracy": float(np.mean(list(robustness.values()))),
                           "per_degradation": robustness},
            "artifacts": artifacts,
            "accelerated": accelerated,
            "history": history,
        }
        if shifted is not None:
            metrics["shift"] = shift.accuracy(staging, shifted)
        metrics["test"] |= report.per_class(labels["test"], scores["test"], names)
        report.write_metrics(report_dir, metrics)
        report.write_json(report_dir / model_files.MANIFEST, report.manifest(found, extra))
        report.write_split(report_dir, found.root, parts.named(), names)
        report.plot_curves(history, report_dir / "curves.png",
                           fine_tune_from=learned.head_epochs if recipe.fine_tune else None)
        report.plot_confusion(metrics["test"]["confusion_matrix"], names,
                              report_dir / "confusion_matrix.png",
                              title=f"{model_dir.name} v{version}: test split")
        version_dir = model_dir / publish_path(version, candidate)
        version_dir.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, version_dir)
        progress.phase(Phase.EXPORT, 1.0)
    except BaseException:
        export.discard(staging, report_dir)
        raise
    return Result(version, version_dir, report_dir, metrics, model, parts, names, base, recipe)


def publish_path(version: int, candidate: bool) -> Path:
    """Where a finished version goes, relative to the model folder; the rename
    is atomic, so a polling server never sees half a version."""
    return Path(model_files.CANDIDATES, str(version)) if candidate else Path(str(version))
