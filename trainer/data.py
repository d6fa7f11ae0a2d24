"""Finding, checking and splitting a folder-per-class photo set.

Layout: `DIR/<class name>/<any sub folders>/<image files>`. Hidden files and
folders are skipped. Nothing here imports TensorFlow, so `stats` answers fast.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from trainer.errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
#: Below this a class cannot be split into train, validation and test parts
#: and still say anything about how well it was learned.
MIN_IMAGES_PER_CLASS = 10


@dataclass(frozen=True)
class Example:
    path: Path
    label: int


@dataclass(frozen=True)
class BadFile:
    path: Path
    reason: str


@dataclass
class Scan:
    """What a data set folder holds: usable images per class and bad files."""

    root: Path
    class_names: list[str]
    examples: list[Example]
    bad_files: list[BadFile] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counted = Counter(e.label for e in self.examples)
        return {name: counted[i] for i, name in enumerate(self.class_names)}

    def small_classes(self, minimum: int = MIN_IMAGES_PER_CLASS) -> list[str]:
        return [name for name, n in self.counts().items() if n < minimum]

    def fingerprint(self) -> str:
        """SHA-256 over every image's class/path and content: equal data, equal hash."""
        digest = hashlib.sha256()
        for example in sorted(self.examples, key=lambda e: e.path):
            digest.update(str(example.path.relative_to(self.root)).encode())
            digest.update(hashlib.sha256(example.path.read_bytes()).digest())
        return digest.hexdigest()


def _visible_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def check_image(path: Path) -> str | None:
    """Why `path` is not a usable image, or None. Decodes it fully: a header
    check alone misses truncated files."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix {path.suffix or 'none'!r})"
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return "too many pixels (decompression bomb guard)"
    except Exception as exc:  # Pillow raises many types for corrupt data
        return f"cannot be decoded: {exc}"
    return None


def class_folders(root: Path) -> list[Path]:
    """The class folders, in label order: a label is an index into this list."""
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def scan(root: Path, *, progress: bool = True) -> Scan:
    """List the classes and check every file. Raises DatasetError when there is
    nothing to train on at all; smaller problems are left in the Scan to report."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"data set folder {root} does not exist: give a folder with one sub folder "
            "of images per class"
        )
    class_dirs = class_folders(root)
    if not class_dirs:
        raise DatasetError(
            f"data set folder {root} has no class folders: put each class's images in "
            f"{root}/<class name>/"
        )
    files = [(label, path) for label, d in enumerate(class_dirs) for path in _visible_files(d)]
    examples: list[Example] = []
    bad: list[BadFile] = []
    for label, path in tqdm(files, desc="checking images", unit="img", disable=not progress):
        reason = check_image(path)
        if reason:
            bad.append(BadFile(path, reason))
        else:
            examples.append(Example(path, label))
    return Scan(root, [d.name for d in class_dirs], examples, bad)


def check_trainable(
    found: Scan, *, min_per_class: int = MIN_IMAGES_PER_CLASS, skip_bad_files: bool = False
) -> None:
    """Refuse a data set the trainer cannot learn from, with one line that says why."""
    if not found.examples:
        raise DatasetError(f"data set folder {found.root} has no readable images")
    if found.bad_files and not skip_bad_files:
        first = found.bad_files[0]
        raise DatasetError(
            f"{len(found.bad_files)} unreadable or non-image file(s), e.g. {first.path}: "
            f"{first.reason}; remove them or pass --skip-bad-files "
            f"(`python -m trainer stats {found.root}` lists them all)"
        )
    if len(found.class_names) < 2:
        raise DatasetError(
            f"only one class ({found.class_names[0]!r}) in {found.root}: a classifier needs "
            "at least two class folders"
        )
    small = found.small_classes(min_per_class)
    if small:
        counts = found.counts()
        listed = ", ".join(f"{name} ({counts[name]})" for name in small)
        raise DatasetError(
            f"too few images in class(es) {listed}: each class needs at least "
            f"{min_per_class}; add images or remove the folder"
        )


def check_examples(examples, class_names: list[str]) -> list[Example]:
    """Photos given by path and label (reviewed photos from the image store)
    must be readable images with one of the data set's labels."""
    checked = []
    for example in examples:
        if not 0 <= example.label < len(class_names):
            raise DatasetError(f"photo {example.path} has label {example.label}, not one of "
                               f"the {len(class_names)} classes")
        reason = check_image(Path(example.path))
        if reason:
            raise DatasetError(f"photo {example.path}: {reason}")
        checked.append(Example(Path(example.path), example.label))
    return checked


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class Split:
    train: list[Example]
    val: list[Example]
    test: list[Example]

    def named(self) -> dict[str, list[Example]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def split(
    examples: list[Example], *, seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> Split:
    """Deterministic stratified split: the same files and seed give the same parts,
    whatever order the file system lists them in."""
    ordered = sorted(examples, key=lambda e: e.path)
    labels = [e.label for e in ordered]
    rest, test = train_test_split(
        ordered, test_size=test_fraction, stratify=labels, random_state=seed
    )
    val_share = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(
        rest, test_size=val_share, stratify=[e.label for e in rest], random_state=seed
    )
    return Split(train, val, test)
