"""Version numbering of the model folder TF Serving polls."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
