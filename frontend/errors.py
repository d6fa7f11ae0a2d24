"""One error shape: `{"error": "..."}` for the JSON API, a friendly page elsewhere.

Nothing ever answers with a traceback; unexpected exceptions are logged and
answered 500 with a short message.
"""

from __future__ import annotations

from flask import (
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    make_response,
    render_template,
    request,
)
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
    @app.before_request
    def refuse_nul_characters():
        # PostgreSQL's text cannot hold U+0000 (psycopg raises DataError, a 500):
        # an id, a query parameter or a form field holding one is refused here.
        fields = [*(request.view_args or {}).items(), *request.args.items(multi=True)]
        if request.method in ("POST", "PUT", "PATCH"):
            fields += request.form.items(multi=True)
        for name, value in fields:
            if "\x00" in name or "\x00" in str(value):
                abort(400, f"{name.replace(chr(0), '')} holds a NUL character")

    @app.errorhandler(UploadError)
    def upload_error(exc: UploadError):
        return error_response(exc.message, exc.status)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return error_response(f"the form expired or did not come from this site "
                              f"({exc.description}); reload the page and try again", 400)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc: RequestEntityTooLarge):
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        if request.content_length is not None and request.content_length <= limit:
            # werkzeug's other refusal: the form's parts (MAX_FORM_PARTS) are too many.
            parts = current_app.config["MAX_FORM_PARTS"]
            return error_response(f"the form has more than {parts:,} parts (files and fields)",
                                  413)
        return error_response(f"the request is over the {limit / 2**20:.1f} MB limit", 413)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        response = make_response(error_response(exc.description or exc.name, exc.code or 500))
        # The exception's own headers: Allow on a 405, WWW-Authenticate on a 401.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    # Flask looks handlers up along the exception's classes, so an HTTPException
    # always finds the one above first: only other exceptions come here.
    @app.errorhandler(Exception)
    def unexpected(_exc: Exception):
        current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response("something went wrong on our side; it has been logged", 500)
