"""Which augmentation recipe holds up best on photos unlike the training set?

Users' photos are smaller, blurrier, more compressed, badly framed or dim.
This scores several augmentation recipes on the plain and on degraded copies
of the validation and test photos (trainer/robustness.py), averaged over
several stratified splits. Features of every photo (plain, degraded and
augmented) are computed once, so each split only retrains the head. The
default Recipe is picked by degraded *validation* accuracy; test figures are
reported beside it. Prints figures, asserts nothing.

    .venv/bin/python bench/recipes.py [--data DIR] [--seeds 3]
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from core.settings import get_settings  # noqa: E402
from trainer import data, report  # noqa: E402
from trainer.fit import extract_features, fit_head  # noqa: E402
from trainer.model import build_base, build_head  # noqa: E402
from trainer.recipe import Recipe  # noqa: E402
from trainer.robustness import degraded_copies  # noqa: E402
from trainer.train import head_scores  # noqa: E402

PLAIN = replace(Recipe(), blur=0.0, brightness=0.0, augmented_views=1)
RECIPES = {
    "none": replace(PLAIN, augmented_views=0),
    "flip only": replace(PLAIN, zoom=0.0, contrast=0.0),
    "flip, zoom, contrast": PLAIN,
    "+ rotation": replace(PLAIN, rotation=0.05),
    "+ rotation, 2 views": replace(PLAIN, rotation=0.05, augmented_views=2),
    "heavy, 2 views": replace(PLAIN, rotation=0.25, zoom=0.4, contrast=0.5, augmented_views=2),
    "+ brightness": replace(PLAIN, brightness=0.3),
    "+ blur": replace(PLAIN, blur=3.0),
    "+ blur, brightness": replace(PLAIN, blur=3.0, brightness=0.3),
    "+ blur, brightness, 2 views (default)": Recipe(),
}


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--data", default=str(get_settings().fruits_dir))
    cli.add_argument("--seeds", type=int, default=3)
    args = cli.parse_args()
    found = data.scan(args.data, progress=False)
    data.check_trainable(found)
    examples = sorted(found.examples, key=lambda e: e.path)
    index = {e.path: i for i, e in enumerate(examples)}
    labels = np.array([e.label for e in examples])
    base = build_base("imagenet")

    plain = extract_features(base, examples, desc="features: plain")
    degraded = {kind: extract_features(base, images, desc=f"features: {kind}")
                for kind, images in degraded_copies([e.path for e in examples]).items()}
    views: dict[tuple, list[np.ndarray]] = {}
    for recipe in RECIPES.values():
        key = tuple(recipe.augmentation().items())
        have = views.setdefault(key, [])
        for v in range(len(have), recipe.augmented_views):
            have.append(extract_features(base, examples, desc=f"features: view {v + 1}",
                                         augmenter=recipe.view_augmenter(v)))

    rows = []
    for name, recipe in RECIPES.items():
        key = tuple(recipe.augmentation().items())
        scores: dict[str, list[float]] = {"val": [], "val degraded": [], "test": [],
                                          "test degraded": []}
        for seed in range(args.seeds):
            parts = data.split(examples, seed=seed)
            train, val, test = ([index[e.path] for e in part] for part in
                                (parts.train, parts.val, parts.test))
            head = build_head(len(found.class_names), recipe.dropout)
            fit_head(head,
                     (np.concatenate([plain[train]] + [v[train] for v in
                                                       views[key][:recipe.augmented_views]]),
                      np.tile(labels[train], recipe.augmented_views + 1)),
                     (plain[val], labels[val]), epochs=recipe.epochs,
                     learning_rate=recipe.learning_rate, patience=recipe.patience,
                     batch_size=recipe.batch_size, seed=seed)

            def accuracy(features: np.ndarray, rows: list[int], head=head) -> float:
                return report.scores_summary(labels[rows], head_scores(head, features[rows]))[
                    "accuracy"]

            for part, rows_ in (("val", val), ("test", test)):
                scores[part].append(accuracy(plain, rows_))
                scores[f"{part} degraded"].append(
                    float(np.mean([accuracy(d, rows_) for d in degraded.values()])))
        rows.append((name, recipe.augmented_views,
                     *(report.percent(float(np.mean(v))) for v in scores.values())))
    print()
    print(report.table(rows, ("recipe", "views", "val", "val degraded", "test",
                              "test degraded")))
    print(f"\nmeans over {args.seeds} stratified splits of {len(examples)} photos; degraded = "
          f"mean over {', '.join(degraded)}")


if __name__ == "__main__":
    main()
