"""The model: the versions Serving reports and the training reports beside them."""

from __future__ import annotations

from flask import abort, render_template, send_file

from core.serving_client import ServingRequestError
from frontend.admin import bp
from frontend.services import services
from frontend.versions import REPORT_FILES, report_path, reports, served_versions


@bp.get("/models")
def models():
    settings = services().settings
    try:
        versions, error = served_versions(settings), None
    except ServingRequestError as exc:
        versions, error = [], exc.message
    found = reports(settings)
    served = {int(v["version"]) for v in versions}
    return render_template("admin/models.html", versions=versions, error=error, reports=found,
                           unserved=sorted(set(found) - served, reverse=True),
                           model=settings.model_name, serving_url=settings.serving_url)


@bp.get("/models/<int:version>/<name>")
def report_file(version: int, name: str):
    if name not in REPORT_FILES:
        abort(404, f"no report file {name}")
    path = report_path(services().settings, version, name)
    if not path.is_file():
        abort(404, f"version {version} has no {name}")
    return send_file(path)
