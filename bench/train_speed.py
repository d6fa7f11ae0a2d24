"""Fast path against the reference recipe, in one process, on the same split.

Reference: a plain `model.fit` over decoded images for 30 epochs with the
base frozen, so the whole MobileNetV2 runs on every photo every epoch, with
the augmentation the reference uses every epoch (flip, rotation, zoom,
contrast). Decoded photos are cached in memory, which only helps it.
Fast path: `make train`'s learning, the default Recipe: the base runs once
per photo (plus augmented views) with an empty feature cache, so nothing is
read from an earlier run; the head trains on those features and is
calibrated, with the base run by Keras, then again with the base run by
LiteRT (`--feature-runtime litert`, the trainer's default; its conversion of
the base included, as on a first run). All timings run from a fresh ImageNet
base to a model scored on the test split; scoring degraded copies is outside
them. Prints figures, asserts nothing.

    .venv/bin/python bench/train_speed.py [--data DIR] [--epochs 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core.settings import get_settings  # noqa: E402
from trainer import data, report  # noqa: E402
from trainer.features import FeatureCache  # noqa: E402
from trainer.fit import extract_features, fit_images, image_dataset  # noqa: E402
from trainer.model import build_base, build_head, join  # noqa: E402
from trainer.recipe import Recipe  # noqa: E402
from trainer.robustness import degraded_copies  # noqa: E402
from trainer.train import head_scores, labels_of, learn  # noqa: E402

#: The article's plain model.fit recipe: Adam at 1e-3, whatever the head's default now is.
REFERENCE_LEARNING_RATE = 1e-3


def degraded_accuracy(base, head, test) -> dict[str, float]:
    truth = labels_of(test)
    return {kind: report.scores_summary(truth, head_scores(
                head, extract_features(base, images, desc=f"degraded: {kind}")))["accuracy"]
            for kind, images in degraded_copies([e.path for e in test]).items()}


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--data", default=str(get_settings().fruits_dir))
    cli.add_argument("--epochs", type=int, default=30, help="reference recipe's epochs")
    args = cli.parse_args()
    recipe = Recipe()
    found = data.scan(args.data, progress=False)
    data.check_trainable(found)
    parts = data.split(found.examples, seed=recipe.seed)
    truth = labels_of(parts.test)
    classes = len(found.class_names)
    print(f"{len(found.examples)} images, {classes} classes; split "
          f"{len(parts.train)}/{len(parts.val)}/{len(parts.test)}; {os.cpu_count()} CPUs")

    # Warm TensorFlow's runtime (thread pools, kernels) on a throwaway model so
    # that neither timing pays the process's start-up.
    extract_features(build_base(recipe.weights), parts.val, desc="warm-up")

    base = build_base(recipe.weights)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as empty:
        fast = learn(base, parts, classes, recipe, cache=FeatureCache(Path(empty)),
                     degraded=False)
    fast_acc = report.scores_summary(truth, head_scores(fast.head, fast.features["test"]))
    fast_seconds = time.perf_counter() - started
    fast_degraded = degraded_accuracy(base, fast.head, parts.test)

    lite = {}  # first: the base converted in the run; then: read back from an earlier run
    with tempfile.TemporaryDirectory() as empty:
        for run in ("converted", "kept"):
            started = time.perf_counter()
            cache = FeatureCache(Path(empty) / run, runtime="litert")
            learned = learn(build_base(recipe.weights), parts, classes, recipe, cache=cache,
                            degraded=False)
            lite[run] = (learned, time.perf_counter() - started)
            if run == "converted":
                shutil.copytree(Path(empty) / run / "bases", Path(empty) / "kept" / "bases")

    ref_base = build_base(recipe.weights)
    ref_head = build_head(classes, recipe.dropout)
    reference = join(ref_base, ref_head)
    started = time.perf_counter()
    reference_augmenter = replace(recipe, rotation=0.05, blur=0.0, brightness=0.0).augmenter(
        recipe.seed)  # the reference's own augmentation, whatever the default Recipe's
    fit_images(reference, parts.train, parts.val, augmenter=reference_augmenter,
               epochs=args.epochs, learning_rate=REFERENCE_LEARNING_RATE,
               batch_size=recipe.batch_size, seed=recipe.seed, patience=None,
               desc="reference model.fit")
    ref_scores = reference.predict(image_dataset(parts.test, recipe.batch_size), verbose=0)
    ref_acc = report.scores_summary(truth, ref_scores)
    ref_seconds = time.perf_counter() - started
    ref_degraded = degraded_accuracy(ref_base, ref_head, parts.test)

    def mean(values: dict[str, float]) -> float:
        return sum(values.values()) / len(values)

    print()
    print(report.table(
        [("reference: model.fit over images", f"{args.epochs} epochs", f"{ref_seconds:.1f} s",
          report.percent(ref_acc["accuracy"]), report.percent(mean(ref_degraded))),
         ("fast path: cached features", f"{fast.head_epochs} head epochs",
          f"{fast_seconds:.1f} s", report.percent(fast_acc["accuracy"]),
          report.percent(mean(fast_degraded))),
         *((f"fast path, LiteRT base {run}", f"{learned.head_epochs} head epochs",
            f"{seconds:.1f} s", report.percent(report.scores_summary(
                truth, head_scores(learned.head, learned.features["test"]))["accuracy"]), "")
           for run, (learned, seconds) in lite.items())],
        ("recipe", "epochs", "wall time", "test acc", "degraded test acc")))
    print(f"\nspeed-up: {ref_seconds / fast_seconds:.1f}x; test accuracy "
          f"{fast_acc['accuracy'] - ref_acc['accuracy']:+.1%} (fast minus reference)")
    print(f"fast path with the base run by LiteRT, against Keras ({fast_seconds:.1f} s): "
          + ", ".join(f"{run} {fast_seconds / seconds:.2f}x" for run, (_, seconds)
                      in lite.items())
          + f"; features within {cache.used.get('litert_max_difference', float('nan')):.1g} "
          f"of Keras's, run by {cache.used['runtime']}")


if __name__ == "__main__":
    main()
