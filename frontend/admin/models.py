"""The model: the versions Serving reports and the training reports beside them."""

from __future__ import annotations

import json

from flask import abort, render_template, send_file

from frontend.admin import bp
from frontend.services import services
from serving.client import ServingClient, ServingRequestError

REPORT_FILES = {"curves.png", "confusion_matrix.png", "metrics.json"}


@bp.get("/models")
def models():
    settings = services().settings
    try:
        with ServingClient(settings.serving_url, settings.model_name, retries=0,
                           timeout=5) as client:
            versions, error = client.status(), None
    except ServingRequestError as exc:
        versions, error = [], exc.message
    reports = _reports()
    served = {int(v["version"]) for v in versions}
    return render_template("admin/models.html", versions=versions, error=error, reports=reports,
                           unserved=sorted(set(reports) - served, reverse=True),
                           model=settings.model_name, serving_url=settings.serving_url)


@bp.get("/models/<int:version>/<name>")
def report_file(version: int, name: str):
    if name not in REPORT_FILES:
        abort(404, f"no report file {name}")
    path = _reports_dir() / str(version) / name
    if not path.is_file():
        abort(404, f"version {version} has no {name}")
    return send_file(path)


def _reports_dir():
    settings = services().settings
    return settings.model_base_path / settings.model_name / "reports"


def _reports() -> dict[int, dict]:
    found = {}
    root = _reports_dir()
    for folder in root.iterdir() if root.is_dir() else []:
        metrics = folder / "metrics.json"
        if folder.name.isdigit() and metrics.is_file():
            try:
                found[int(folder.name)] = json.loads(metrics.read_text())
            except (OSError, ValueError):
                continue
    return found
