"""Version numbering of the model folder TF Serving polls."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core import contract
from trainer import export


def test_versions_are_the_numeric_folders_only(tmp_path: Path):
    for name in ("1", "00000007", "reports", ".staging-3-99", "latest"):
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("a file, not a version")
    assert export.versions(tmp_path) == [1, 7]


def test_next_version_follows_both_versions_and_reserved_reports(tmp_path: Path):
    (tmp_path / "2").mkdir()
    (tmp_path / "reports" / "3").mkdir(parents=True)
    assert export.reserve_version(tmp_path)[0] == 4


def test_concurrent_trainers_never_get_the_same_version(tmp_path: Path):
    with ThreadPoolExecutor(8) as pool:
        numbers = list(pool.map(lambda _: export.reserve_version(tmp_path)[0], range(40)))
    assert sorted(numbers) == list(range(1, 41))


def test_folders_that_only_look_numeric_are_not_versions(tmp_path: Path):
    for name in ("²", "٣", "9" * 20, "12"):  # superscript two, Arabic-Indic three, over int64
        (tmp_path / name).mkdir()
        (tmp_path / "reports" / name).mkdir(parents=True)
    assert export.versions(tmp_path) == [12]
    assert export.reserve_version(tmp_path)[0] == 13


def test_the_version_folder_rule_is_tf_servings():
    assert contract.version_number("00000123") == 123
    assert contract.version_number(str(contract.MAX_VERSION)) == contract.MAX_VERSION
    for name in ("", "²", "1.5", "-1", "+1", " 1", "v1", str(contract.MAX_VERSION + 1)):
        assert contract.version_number(name) is None, name
