"""A model's folder on disk, as the trainer writes it and Serving and the site read it.

    <base>/<name>/<version>/             served versions: TF Serving polls these
    <base>/<name>/candidates/<version>/  trained, not (yet) promoted: gated out,
                                         or waiting for a hand promotion
    <base>/<name>/reports/<version>/     the report of every version and candidate; its
                                         manifest.json lists the photos it learnt from
    <base>/<name>/.staging-<version>-*   a version being written; never read

TF Serving serves only folders named by a number, so neither candidates nor
reports nor staging folders are ever loaded. Promotion is one rename on the
same file system: the version appears whole, or not at all.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from core.contract import version_folders

CANDIDATES = "candidates"
REPORTS = "reports"
STAGING_PREFIX = ".staging-"
#: In a report: every photo the version learnt from, by content (trainer/report.py),
#: and the uploads among them deleted since (core/deletion.py).
MANIFEST = "manifest.json"


class PromotionError(ValueError):
    """A candidate that cannot be promoted, with a sentence that says why."""


def candidate_dir(model: Path, version: int) -> Path:
    return model / CANDIDATES / str(version)


def report_dir(model: Path, version: int) -> Path:
    return model / REPORTS / str(version)


def staging_dir(model: Path, version: int) -> Path:
    return model / f"{STAGING_PREFIX}{version}-{os.getpid()}"


def candidates(model: Path) -> list[int]:
    return sorted(version_folders(model / CANDIDATES))


def promote(model: Path, version: int) -> Path:
    """Move a candidate into the served folder, atomically.

    Refused for a version older than one already served: under TF Serving's
    default policy (the latest version) it would never take traffic.
    """
    source = candidate_dir(model, version)
    if not source.is_dir():
        raise PromotionError(f"version {version} is not a candidate waiting for promotion")
    served = version_folders(model)
    if version in served:
        raise PromotionError(f"version {version} is served already")
    newer = [v for v in served if v > version]
    if newer:
        raise PromotionError(f"version {max(newer)} is newer and served: TF Serving serves "
                             f"the latest version, so {version} would never take traffic")
    target = model / str(version)
    os.rename(source, target)
    return target


def discard_unfinished(model: Path, version: int) -> None:
    """What a run cut short leaves of `version`: its staging folders, its report,
    and a candidate it had not yet handed on. Served versions are never touched."""
    for path in model.glob(f"{STAGING_PREFIX}{version}-*"):
        shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(candidate_dir(model, version), ignore_errors=True)
    shutil.rmtree(report_dir(model, version), ignore_errors=True)
