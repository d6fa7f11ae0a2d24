"""Which of a model's version folders a version policy wants served, and when a
folder has changed.

Pure functions over the file system and TF Serving's ServableVersionPolicy, so
the rules are testable without loading a model. Which folders are versions is
the model contract's rule (core/contract.py); of those,
`latest {num_versions: N}` (the default, N=1) wants the N highest, `all`
every one, `specific {versions: ...}` those listed that exist.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tensorflow_serving.config.file_system_storage_path_source_pb2 import (
    FileSystemStoragePathSourceConfig,
)

VersionPolicy = FileSystemStoragePathSourceConfig.ServableVersionPolicy
Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(version_dir: Path) -> Fingerprint:
    """Names, sizes and times of a version's files.

    A version that failed to load is retried only once this changes, e.g. when
    a slow copy into the folder completes.
    """
    files = []
    for root, _dirs, names in os.walk(version_dir):
        for name in names:
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            files.append((os.path.relpath(path, version_dir), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(files))


def aspired(policy: VersionPolicy, candidates: Iterable[int]) -> set[int]:
    versions = sorted(set(candidates))
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(versions)
    if choice == "specific":
        return set(versions) & set(policy.specific.versions)
    return set(versions[-_latest_count(policy):])


def describe(policy: VersionPolicy) -> str:
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return "all"
    if choice == "specific":
        return f"specific {sorted(policy.specific.versions)}"
    return f"latest {_latest_count(policy)}"


def _latest_count(policy: VersionPolicy) -> int:
    """latest {num_versions: N}; unset (0) and no policy at all both mean 1."""
    if policy.WhichOneof("policy_choice") == "latest":
        return max(policy.latest.num_versions, 1)
    return 1
