"""One error shape: `{"error": "..."}` for the JSON API, a friendly page elsewhere.

Nothing ever answers with a traceback; unexpected exceptions are logged and
answered 500 with a short message.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from frontend.uploads import UploadError


def wants_json() -> bool:
    return (request.path.startswith(("/api/", "/admin/api/"))
            or request.accept_mimetypes.best == "application/json")


def error_response(message: str, status: int) -> tuple[Response | str, int]:
    if wants_json():
        return jsonify(error=message), status
    return render_template("error.html", message=message, status=status), status


def init_app(app: Flask) -> None:
    @app.errorhandler(UploadError)
    def upload_error(exc: UploadError):
        return error_response(exc.message, exc.status)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return error_response(f"the form expired or did not come from this site "
                              f"({exc.description}); reload the page and try again", 400)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc: RequestEntityTooLarge):
        limit = current_app.config["MAX_CONTENT_LENGTH"] / 2**20
        return error_response(f"the request is over the {limit:.1f} MB limit", 413)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return error_response(exc.description or exc.name, exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        if isinstance(exc, HTTPException):
            return http_error(exc)
        current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response("something went wrong on our side; it has been logged", 500)
