"""The model folder's layout: candidates wait beside the served versions and
become one by a single rename; a run cut short leaves nothing of its version."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import model_files
from core.contract import version_folders


def _version(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"model")
    return folder


def test_promotion_moves_the_candidate_into_the_served_folder_whole(tmp_path: Path) -> None:
    _version(tmp_path / "1")
    _version(model_files.candidate_dir(tmp_path, 2))
    assert set(version_folders(tmp_path)) == {1}  # a candidate is never served
    target = model_files.promote(tmp_path, 2)
    assert target == tmp_path / "2" and (target / "saved_model.pb").read_bytes() == b"model"
    assert set(version_folders(tmp_path)) == {1, 2}
    assert model_files.candidates(tmp_path) == []


def test_a_candidate_older_than_a_served_version_is_not_promoted(tmp_path: Path) -> None:
    _version(tmp_path / "5")
    _version(model_files.candidate_dir(tmp_path, 3))
    with pytest.raises(model_files.PromotionError, match="version 5 is newer"):
        model_files.promote(tmp_path, 3)
    assert model_files.candidates(tmp_path) == [3]


def test_promoting_what_is_no_candidate_says_so(tmp_path: Path) -> None:
    _version(tmp_path / "1")
    with pytest.raises(model_files.PromotionError, match="not a candidate"):
        model_files.promote(tmp_path, 1)
    with pytest.raises(model_files.PromotionError, match="not a candidate"):
        model_files.promote(tmp_path, 9)


def test_discarding_an_unfinished_version_keeps_every_served_one(tmp_path: Path) -> None:
    _version(tmp_path / "1")
    _version(model_files.report_dir(tmp_path, 1))
    _version(model_files.staging_dir(tmp_path, 2))
    _version(model_files.report_dir(tmp_path, 2))
    _version(model_files.candidate_dir(tmp_path, 2))
    model_files.discard_unfinished(tmp_path, 2)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_dir())
    assert left == ["1", "candidates", "reports", "reports/1"]
