"""What each command does and prints; the parsing lives in __main__.py."""

from __future__ import annotations

import argparse
from dataclasses import replace

from trainer import data
from trainer.report import megabytes, percent, table


def stats(args: argparse.Namespace) -> int:
    found = data.scan(args.data)
    minimum = args.min_per_class or data.MIN_IMAGES_PER_CLASS
    small = set(found.small_classes(minimum))
    counts = found.counts()
    rows = [(name, n, "too few to train on" if name in small else "")
            for name, n in counts.items()]
    rows.append(("total", sum(counts.values()), f"{len(counts)} classes"))
    print(table(rows, ("class", "images", "")))
    if found.bad_files:
        print(f"\n{len(found.bad_files)} unreadable or non-image file(s):")
        for bad in found.bad_files:
            print(f"  {bad.path}: {bad.reason}")
    if small:
        print(f"\nclasses with fewer than {minimum} images: {', '.join(sorted(small))}")
    return 0


def train(args: argparse.Namespace) -> int:
    from trainer.features import FeatureCache
    from trainer.recipe import Recipe
    from trainer.train import train as run_training

    overrides = {
        "weights": args.weights,
        "fine_tune": args.fine_tune,
        "epochs": args.epochs,
        "fine_tune_epochs": args.fine_tune_epochs,
        "augmented_views": args.augmented_views,
        "seed": args.seed,
        "min_per_class": args.min_per_class,
    }
    recipe = replace(Recipe(), **{k: v for k, v in overrides.items() if v is not None})
    cache = FeatureCache(None if args.no_feature_cache else args.feature_cache,
                         runtime=args.feature_runtime)
    result = run_training(args.data, args.out / args.name, recipe,
                          skip_bad_files=args.skip_bad_files, cache=cache,
                          shift_data=args.shift_data, check_data=args.check_data)
    m = result.metrics
    shifted = m.get("shift")
    print()
    print(table([(part, percent(m[part]["accuracy"]), f"{m[part]['loss']:.3f}",
                  m["data"]["split"][part]) for part in ("train", "val", "test")]
                + [("test, degraded", percent(m["robustness"]["degraded_test_accuracy"]), "",
                    m["data"]["split"]["test"])]
                + ([(f"elsewhere: {shifted['data']}", percent(shifted["accuracy"]), "",
                     shifted["images"])] if shifted else []),
                ("split", "accuracy", "loss", "images")))
    if shifted:
        print("elsewhere, per class: " + ", ".join(
            f"{name} {percent(c['accuracy'])} of {c['images']}"
            for name, c in shifted["per_class"].items()))
    if m["calibration"]:
        c = m["calibration"]
        print(f"\ncalibration: temperature {c['temperature']:.2f}; expected calibration error "
              f"val {percent(c['ece_before']['val'])} -> {percent(c['ece_after']['val'])}, "
              f"test {percent(c['ece_before']['test'])} -> {percent(c['ece_after']['test'])}")
    print(f"features computed: {m['features_computed']} photo views"
          + (" (no cache)" if cache.folder is None else f" (the rest from {cache.folder})")
          + features_runtime(m["features_runtime"]))
    print()
    print(table([(name, megabytes(a["bytes"]), percent(a["test_accuracy"]), a["path"])
                 for name, a in m["artifacts"].items()],
                ("artifact", "size", "test accuracy", "path")))
    if m["accelerated"]:
        print(accelerated_summary(m["accelerated"]))
    print(f"\nexported {args.name} version {result.version} to {result.version_dir} "
          f"(trained in {m['training_seconds']:.0f} s); report in {result.report_dir}")
    return 0


def features_runtime(used: dict) -> str:
    difference = used.get("litert_max_difference")
    if difference is None:
        return ", by Keras"
    if used["runtime"] == "litert":
        return f", by LiteRT (within {difference:.1g} of Keras's features)"
    return f", by Keras (LiteRT's features were {difference:.1g} from Keras's)"


def accelerated_summary(accelerated: dict) -> str:
    lines = []
    for quantization, tried in accelerated["tried"].items():
        checks = "; ".join(
            f"{name}: same top class {percent(c['same_top_class'])}"
            + (f", {c['accuracy_points_apart']:.1f} points apart" if "accuracy" in c else "")
            for name, c in tried["checks"].items())
        lines.append(f"  {quantization} {megabytes(tried['bytes'])}: "
                     f"{'passed' if tried['passed'] else 'failed'} ({checks})")
    chosen = accelerated["quantization"]
    head = (f"\naccelerated file: {accelerated['file']} ({chosen}), run by the embedded server"
            if chosen else "\naccelerated file: none passed; the SavedModel is served")
    return "\n".join([head, *lines])


def evaluate(args: argparse.Namespace) -> int:
    from trainer.evaluate import evaluate as run_evaluation

    metrics, out_dir = run_evaluation(args.model, args.data, args.out)
    rows = [(name, percent(c["precision"]), percent(c["recall"]), f"{c['f1']:.3f}", c["support"])
            for name, c in metrics["per_class"].items()]
    print(table(rows, ("class", "precision", "recall", "f1", "images")))
    print(f"\naccuracy {percent(metrics['accuracy'])}, loss {metrics['loss']:.3f} on "
          f"{metrics['data']['images']} images; metrics in {out_dir}")
    return 0


def worker(_args: argparse.Namespace) -> int:
    from core.settings import get_settings
    from trainer.worker import work

    return work(get_settings())


def run(args: argparse.Namespace) -> int:
    return {"stats": stats, "train": train, "evaluate": evaluate,
            "worker": worker}[args.command](args)


