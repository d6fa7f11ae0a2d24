"""Which head recipe holds up on photos from elsewhere?

Two measures, neither of which the training photos' own test split gives:
- webstock: the model trained on the fruit photos' training split, scored on
  ../shared/datasets/webstock (web and stock photos of apples, bananas and
  oranges; the model still chooses among all five fruits);
- leave one variety out: for each apple and pear variety in the fruit photos
  (file names carry it), train without that variety and score its photos;
  the mean over the 8 varieties says how well a class is learnt rather
  than its photos remembered.
Features (plain and each augmented view) are computed once through the
trainer's feature cache, so each recipe only retrains heads. Prints figures,
asserts nothing.

    .venv/bin/python bench/shift.py [--fruits DIR] [--webstock DIR] [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from core.settings import get_settings  # noqa: E402
from trainer import data, report  # noqa: E402
from trainer.calibration import expected_calibration_error  # noqa: E402
from trainer.features import FeatureCache  # noqa: E402
from trainer.fit import fit_head  # noqa: E402
from trainer.model import build_base, build_head  # noqa: E402
from trainer.recipe import Recipe  # noqa: E402
from trainer.train import head_scores, view_features  # noqa: E402

DEFAULT = Recipe()
OLD = replace(DEFAULT, l2=0.0, learning_rate=1e-3, head_batch_size=32)  # before this bench
NO_BLUR = {"blur": 0.0, "brightness": 0.0}
RECIPES = {
    "default": DEFAULT,
    "default, 1 view": replace(DEFAULT, augmented_views=1),
    "default, no views": replace(DEFAULT, augmented_views=0),
    "default, no blur/brightness": replace(DEFAULT, **NO_BLUR),
    "default, L2 1e-2": replace(DEFAULT, l2=1e-2),
    "no L2": replace(DEFAULT, l2=0.0),
    "no L2, dropout 0.5": replace(DEFAULT, l2=0.0, dropout=0.5),
    "no L2, label smoothing 0.1": replace(DEFAULT, l2=0.0, label_smoothing=0.1),
    "previous default (no L2, batch 32, lr 1e-3)": OLD,
    "reference-like: 30 epochs, no early stop, flip/zoom/contrast": replace(
        OLD, augmented_views=2, epochs=30, patience=10_000, **NO_BLUR),
}
#: The webstock folders' classes, as the fruit model's class indices.
FRUITS = ["apple", "banana", "kiwi", "orange", "pear"]


def variety(path: Path) -> str:
    return re.sub(r"^grocery_(test|train|val)_|_\d+$", "", path.stem)


class Features:
    """Every photo's features for each view any recipe asks for, by photo."""

    def __init__(self, base, examples, cache):
        self.base, self.examples, self.cache = base, examples, cache
        self.index = {e.path: i for i, e in enumerate(examples)}
        self.views: dict[str, np.ndarray] = {}

    def rows(self, recipe: Recipe, examples) -> tuple[np.ndarray, np.ndarray]:
        names = ["plain"] + [recipe.view_name(v) for v in range(recipe.augmented_views)]
        if any(name not in self.views for name in names):
            for name, x in zip(names, view_features(self.base, self.examples, recipe,
                                                    self.cache), strict=True):
                self.views[name] = x
        at = [self.index[e.path] for e in examples]
        labels = np.array([e.label for e in examples])
        return (np.concatenate([self.views[n][at] for n in names]),
                np.tile(labels, len(names)))

    def plain(self, examples) -> np.ndarray:
        return self.views["plain"][[self.index[e.path] for e in examples]]


def fit(features: Features, recipe: Recipe, examples):
    parts = data.split(examples, seed=recipe.seed)
    head = build_head(len(FRUITS), recipe.dropout, recipe.l2)
    fit_head(head, features.rows(recipe, parts.train),
             (features.plain(parts.val), np.array([e.label for e in parts.val])),
             epochs=recipe.epochs, learning_rate=recipe.learning_rate, patience=recipe.patience,
             batch_size=recipe.head_batch_size, seed=recipe.seed,
             label_smoothing=recipe.label_smoothing)
    return head, parts


def main() -> None:
    settings = get_settings()
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--fruits", type=Path, default=settings.fruits_dir)
    cli.add_argument("--webstock", type=Path, default=settings.fruits_dir.parent / "webstock")
    cli.add_argument("--cache", type=Path, default=None,
                     help="feature cache folder (default: a fresh temporary one)")
    args = cli.parse_args()
    fruits = sorted(data.scan(args.fruits, progress=False).examples, key=lambda e: e.path)
    stock = data.scan(args.webstock, progress=False)
    webstock = [data.Example(e.path, FRUITS.index(stock.class_names[e.label]))
                for e in stock.examples]
    held_out = sorted({variety(e.path) for e in fruits if FRUITS[e.label] in ("apple", "pear")})
    with tempfile.TemporaryDirectory() as fresh:
        cache = FeatureCache(args.cache or Path(fresh))
        base = build_base("imagenet")
        features = Features(base, fruits + webstock, cache)
        rows = []
        for name, recipe in RECIPES.items():
            head, parts = fit(features, recipe, fruits)
            test = head_scores(head, features.plain(parts.test))
            stock_scores = head_scores(head, features.plain(webstock))
            stock_truth = np.array([e.label for e in webstock])
            each = []
            for kind in held_out:
                lovo_head, _ = fit(features, recipe, [e for e in fruits
                                                      if variety(e.path) != kind])
                held = [e for e in fruits if variety(e.path) == kind]
                each.append(float((head_scores(lovo_head, features.plain(held)).argmax(1)
                                   == [e.label for e in held]).mean()))
            rows.append((name,
                         report.percent((test.argmax(1) == [e.label for e in parts.test]).mean()),
                         report.percent((stock_scores.argmax(1) == stock_truth).mean()),
                         report.percent(expected_calibration_error(stock_scores, stock_truth)),
                         report.percent(np.mean(each)),
                         " ".join(f"{a:.2f}" for a in each)))
            print(" | ".join(map(str, rows[-1])), flush=True)
    print(f"\n{len(fruits)} fruit photos, {len(webstock)} webstock photos; varieties held out: "
          f"{', '.join(held_out)}\n")
    print(report.table(rows, ("recipe", "test", "webstock", "webstock ECE (uncalibrated)",
                              "leave-one-variety-out", "per variety")))


if __name__ == "__main__":
    main()
