"""Command line: `python -m trainer {stats,train,evaluate,worker} --help`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.settings import get_settings
from trainer.errors import TrainerError

MODEL_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _model_name(value: str) -> str:
    if not value or not set(value) <= MODEL_NAME_CHARS or value.startswith("."):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a model name: use letters, digits, '_', '-' and '.'")
    return value


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return number


def parser() -> argparse.ArgumentParser:
    settings = get_settings()
    cli = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    commands = cli.add_subparsers(dest="command", required=True)

    stats = commands.add_parser("stats", help="count images per class and list bad files")
    stats.add_argument("data", type=Path, help="folder with one sub folder per class")
    stats.add_argument("--min-per-class", type=_positive, default=None,
                       help="flag classes with fewer images (default 10)")

    train = commands.add_parser("train", help="train and export a new model version")
    train.add_argument("--data", type=Path, default=settings.dataset_dir,
                       help="folder with one sub folder per class (default: $DATASET_DIR)")
    train.add_argument("--out", type=Path, default=settings.model_base_path,
                       help="model base folder; exports go to OUT/NAME/<version>/ "
                            "(default: $MODEL_BASE_PATH)")
    train.add_argument("--name", type=_model_name, default=settings.model_name,
                       help="model name as TF Serving will serve it (default: $MODEL_NAME)")
    train.add_argument("--epochs", type=_positive, default=None,
                       help="most epochs for the head on cached features (default 100; "
                            "early stopping usually ends sooner)")
    train.add_argument("--weights", default="imagenet",
                       help="'imagenet' (Keras cache), 'none' (random, for tests) or a .h5 path")
    train.add_argument("--fine-tune", action="store_true",
                       help="then unfreeze the backbone's top blocks at a low learning rate")
    train.add_argument("--fine-tune-epochs", type=_positive, default=None)
    train.add_argument("--augmented-views", type=int, default=None,
                       help="augmented copies of each training photo (default 1)")
    train.add_argument("--seed", type=int, default=None, help="split and training seed")
    train.add_argument("--min-per-class", type=_positive, default=None)
    train.add_argument("--skip-bad-files", action="store_true",
                       help="train on the readable images and ignore the rest")
    train.add_argument("--feature-cache", type=Path, default=settings.feature_cache_dir,
                       help="where the base's features of each photo are kept between runs "
                            "(default: $FEATURE_CACHE_DIR)")
    train.add_argument("--no-feature-cache", action="store_true",
                       help="compute every feature, read and keep none")
    train.add_argument("--feature-runtime", choices=("litert", "keras"), default="litert",
                       help="what runs the frozen base in the feature pass: LiteRT where its "
                            "features match Keras's (the default), or always Keras")
    train.add_argument("--check-data", type=Path, default=settings.check_photos_dir,
                       metavar="DIR",
                       help="photos from elsewhere on which the accelerated file must answer "
                            "as the SavedModel does (default: $CHECK_PHOTOS_DIR)")
    train.add_argument("--shift-data", type=Path, default=None, metavar="DIR",
                       help="also score the export on DIR, photos from elsewhere (a folder "
                            "per class, classes among the model's)")

    evaluate = commands.add_parser("evaluate", help="score an exported version on a folder")
    evaluate.add_argument("--model", type=Path, required=True,
                          help="an exported version folder, e.g. models/classifier/3")
    evaluate.add_argument("--data", type=Path, required=True,
                          help="folder with one sub folder per class")
    evaluate.add_argument("--out", type=Path, default=None,
                          help="where metrics go (default: beside the version's report)")

    commands.add_parser("worker", help="execute the training runs the admin starts, one at a "
                                       "time (reads $REDIS_URL, $DATABASE_URL, $DATASET_DIR, "
                                       "$MODEL_BASE_PATH, $MODEL_NAME)")
    return cli


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads
    from trainer import commands  # TensorFlow loads in here, so --help stays instant

    try:
        return commands.run(args)
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was exported", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
