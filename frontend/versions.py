"""The model's versions: the states Serving reports for them, and the training
reports the trainer writes beside them (models/<name>/reports/<version>/)."""

from __future__ import annotations

import json
from pathlib import Path

from core.contract import version_folders
from core.model_files import REPORTS
from core.serving_client import ServingClient
from core.settings import Settings

#: The report files the back office serves; the TFLite files and split lists stay on disk.
REPORT_FILES = {"curves.png", "confusion_matrix.png", "metrics.json"}


def served_versions(settings: Settings) -> list[dict]:
    """Serving's status of each of the model's versions. Asked once with a short
    timeout: a page waits on the answer, and a Serving that is down should say
    so at once. Raises ServingRequestError."""
    with ServingClient(settings.serving_url, settings.model_name, retries=0,
                       timeout=5) as client:
        return client.status()


def reports(settings: Settings) -> dict[int, dict]:
    """Each version's metrics.json, by version; one that cannot be read is left out."""
    found = {}
    for version, folder in version_folders(_reports_dir(settings)).items():
        metrics = folder / "metrics.json"
        if metrics.is_file():
            try:
                found[version] = json.loads(metrics.read_text())
            except (OSError, ValueError):
                continue
    return found


def report_path(settings: Settings, version: int, name: str) -> Path:
    """Where a version's report file is, if it exists; `name` is one of REPORT_FILES."""
    return _reports_dir(settings) / str(version) / name


def _reports_dir(settings: Settings) -> Path:
    return settings.model_dir / REPORTS


def class_names(settings: Settings, version: int | None) -> list[str]:
    """The classes a version knows, from its report's `class_names`; [] without one."""
    if version is None:
        return []
    try:
        names = json.loads(report_path(settings, version, "metrics.json").read_text())
    except (OSError, ValueError):
        return []
    found = names.get("class_names") if isinstance(names, dict) else None
    return [str(n) for n in found] if isinstance(found, list) else []
