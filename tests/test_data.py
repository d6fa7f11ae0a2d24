"""Finding, checking and splitting photo sets (no TensorFlow involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import make_dataset
from trainer import data
from trainer.errors import DatasetError


def test_scan_counts_images_per_class_in_every_format(shapes_dir: Path):
    found = data.scan(shapes_dir, progress=False)
    assert found.class_names == ["circle", "square", "triangle"]
    assert found.counts() == {"circle": 14, "square": 14, "triangle": 14}
    assert {e.path.suffix for e in found.examples} == {".jpg", ".jpeg", ".png", ".bmp", ".gif",
                                                       ".webp"}
    assert found.bad_files == []


def test_scan_lists_corrupt_empty_and_non_image_files_with_reasons(dataset_copy: Path):
    (dataset_copy / "circle" / "notes.txt").write_text("hello")
    (dataset_copy / "circle" / "empty.jpg").write_bytes(b"")
    whole = (dataset_copy / "square" / "square_000.jpg").read_bytes()
    (dataset_copy / "square" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (dataset_copy / "square" / "fake.png").write_bytes(b"this is not a png")
    found = data.scan(dataset_copy, progress=False)
    reasons = {b.path.name: b.reason for b in found.bad_files}
    assert set(reasons) == {"notes.txt", "empty.jpg", "cut.jpg", "fake.png"}
    assert "not an image" in reasons["notes.txt"]
    assert reasons["empty.jpg"] == "empty file"
    assert "cannot be decoded" in reasons["cut.jpg"]
    assert found.counts()["circle"] == 14  # bad files are not counted as images


def test_scan_ignores_hidden_files_and_folders(dataset_copy: Path):
    (dataset_copy / "circle" / ".DS_Store").write_bytes(b"\0\0")
    (dataset_copy / ".cache").mkdir()
    (dataset_copy / ".cache" / "x.jpg").write_bytes(b"junk")
    found = data.scan(dataset_copy, progress=False)
    assert found.bad_files == [] and ".cache" not in found.class_names


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing", "does not exist"),
    (lambda root: root, "no class folders"),
])
def test_scan_refuses_missing_or_empty_folders(tmp_path: Path, make, message):
    with pytest.raises(DatasetError, match=message):
        data.scan(make(tmp_path), progress=False)


def test_check_trainable_refuses_a_single_class(tmp_path: Path):
    found = data.scan(make_dataset(tmp_path, {"circle": 12}), progress=False)
    with pytest.raises(DatasetError, match="only one class"):
        data.check_trainable(found)


def test_check_trainable_names_classes_with_too_few_images(tmp_path: Path):
    found = data.scan(make_dataset(tmp_path, {"circle": 12, "square": 3}), progress=False)
    assert found.small_classes() == ["square"]
    with pytest.raises(DatasetError, match=r"square \(3\)"):
        data.check_trainable(found)


def test_check_trainable_refuses_bad_files_unless_told_to_skip(dataset_copy: Path):
    (dataset_copy / "circle" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    found = data.scan(dataset_copy, progress=False)
    with pytest.raises(DatasetError, match="--skip-bad-files"):
        data.check_trainable(found)
    data.check_trainable(found, skip_bad_files=True)


def test_split_is_stratified_disjoint_and_complete(shapes_dir: Path):
    found = data.scan(shapes_dir, progress=False)
    parts = data.split(found.examples, seed=1)
    paths = [e.path for part in parts.named().values() for e in part]
    assert sorted(paths) == sorted(e.path for e in found.examples)
    assert len(set(paths)) == len(paths)
    for part in parts.named().values():
        assert {e.label for e in part} == {0, 1, 2}


def test_split_depends_on_the_seed_only_not_on_listing_order(shapes_dir: Path):
    examples = data.scan(shapes_dir, progress=False).examples
    first = data.split(examples, seed=7)
    again = data.split(list(reversed(examples)), seed=7)
    other = data.split(examples, seed=8)
    assert first == again
    assert first.test != other.test


def test_fingerprint_changes_when_an_image_changes(dataset_copy: Path):
    before = data.scan(dataset_copy, progress=False).fingerprint()
    assert data.scan(dataset_copy, progress=False).fingerprint() == before
    target = dataset_copy / "circle" / "circle_001.png"
    target.write_bytes((dataset_copy / "circle" / "circle_007.png").read_bytes())
    assert data.scan(dataset_copy, progress=False).fingerprint() != before
