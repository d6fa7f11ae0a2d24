"""Upload quotas: how many requests and images one caller may send, and how big
one request may be.

A caller is its address, or the API key it sends to /api as `X-API-Key`
(frontend/api_keys.py), whatever address that comes from; a key that is
unknown or revoked is refused, never counted as its address. An address may
make UPLOAD_REQUESTS_PER_MINUTE upload requests and send ANON_IMAGES_PER_MINUTE
and ANON_IMAGES_PER_HOUR images; a key sends its own images per hour and per
day. Images are counted when the request arrives, before anything is stored:
every file sent is one, a .zip as many as the entries it lists (a request never
more than a full batch), so a batch of 500 costs 500.
Flask-Limiter keeps the counts in Redis (in each process's memory while Redis
is down) in sliding windows, which a refused request does not fill.

Without a key, one request carries at most ANON_MAX_BATCH_IMAGES images and
ANON_MAX_REQUEST_BYTES: they are set on the request before its body is read
(Flask's per-request max_content_length and max_form_parts) and on the upload
limits the routes check (`limits()`), so an archive cannot smuggle more in. A
key gets the site's full MAX_BATCH_IMAGES and MAX_REQUEST_BYTES.

The caller is identified, and the per-request limits set, in a before_request
hook rather than in Flask-Limiter's key and cost functions: an exception raised
in those reads to Flask-Limiter as its storage failing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import IO

from flask import Flask, abort, current_app, g, jsonify, render_template, request
from flask_limiter import RateLimitExceeded
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import RequestEntityTooLarge

from frontend import api_keys, archives
from frontend.errors import error_response
from frontend.extensions import limiter
from frontend.services import limits, services
from frontend.uploads import Limits, mb

#: What a refusal says was spent, by the limit's scope.
SPENT = {
    "upload-requests": "too many uploads from this address: at most {amount} per {window}",
    "upload-images": "too many images from this address: at most {amount} images per {window}",
    "key-images": "this API key has used its quota of {amount} images per {window}",
}
_upload_views: set[Callable] = set()


def caller() -> api_keys.Caller | None:
    """The request's valid API key; None for an anonymous request."""
    return g.get("api_key")


def upload_route(view: Callable) -> Callable:
    """Makes a view an upload: its caller's quotas apply, and without an API key
    the smaller per-request limits."""
    for limit in (
        limiter.shared_limit(_key_images, "key-images", key_func=_key, cost=_images,
                             exempt_when=lambda: caller() is None),
        limiter.shared_limit(_address_images, "upload-images", key_func=_address, cost=_images,
                             exempt_when=lambda: caller() is not None),
        limiter.shared_limit(_address_requests, "upload-requests", key_func=_address,
                             exempt_when=lambda: caller() is not None),
    ):
        view = limit(view)
    _upload_views.add(view)
    return view


def init_app(app: Flask) -> None:
    """Before the other extensions' hooks: the CSRF check reads the form, which the
    per-request limits must bound first."""
    app.before_request(_identify)
    app.register_error_handler(RateLimitExceeded, _too_many)


def _identify():
    if request.path.startswith("/api/") and api_keys.HEADER in request.headers:
        with services().db.session() as session:
            g.api_key = api_keys.authenticate(session, request.headers[api_keys.HEADER])
        if g.api_key is None:
            abort(401, f"the API key ({api_keys.HEADER}) is unknown or revoked; send a live "
                       "key, or none to be counted by your address")
    if current_app.view_functions.get(request.endpoint) not in _upload_views:
        return None
    settings, full = services().settings, limits()
    if caller() is None:
        anonymous = replace(full, batch_images=min(settings.anon_max_batch_images,
                                                   full.batch_images),
                            archive_bytes=min(settings.anon_max_request_bytes,
                                              settings.max_request_bytes))
        if (request.content_length or 0) > anonymous.archive_bytes:
            return _too_big(anonymous, settings.max_request_bytes, full.batch_images)
        request.max_content_length = anonymous.archive_bytes
        if request.max_form_parts is not None:  # as many fewer parts as fewer files
            request.max_form_parts -= full.batch_images - anonymous.batch_images
        try:
            request.files  # read now, within these limits  # noqa: B018
        except RequestEntityTooLarge:
            if request.content_length is not None:  # within its size: too many parts
                return _refusal(f"the form has more than {request.max_form_parts:,} parts "
                                f"(files and fields)" + _key_hint(
                                    f"{full.batch_images:,} files",
                                    full.batch_images > anonymous.batch_images), 413)
            return _too_big(anonymous, settings.max_request_bytes, full.batch_images)
        g.upload_limits = anonymous
    most = limits().batch_images
    loose, archived = _files_sent(most)
    if loose > most:
        return _refusal(f"{loose:,} files; a batch holds at most {most:,}"
                        + _key_hint(f"{full.batch_images:,} images", full.batch_images > most),
                        413)
    # No request holds more than `most` images (the route refuses more), so none
    # costs more, whatever its archives declare.
    g.quota_images = min(loose + archived, most)
    return None


def _files_sent(cap: int) -> tuple[int, int]:
    """The non-empty file parts that are not archives, and the entries the archives'
    end records declare (each at most `cap`). An archive's directories and hidden
    files are among its entries: a .zip can cost more than the images it holds,
    but never more than a full batch."""
    loose = archived = 0
    for field, part in request.files.items(multi=True):
        if field == "archive":
            archived += _declared_entries(part.stream, cap)
        elif part.filename or _size(part.stream):
            loose += 1
    return loose, archived


def _declared_entries(stream: IO[bytes], cap: int) -> int:
    """The entries an archive lists (frontend/archives.py reads them without parsing
    its directory), at most `cap`; an empty part none, and a file that is no .zip
    one (the route refuses it)."""
    data = stream.read()
    stream.seek(0)
    if not data:
        return 0
    return min(archives.listed_entries(data) or 1, cap)


def _size(stream: IO[bytes]) -> int:
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    return size


# --- Flask-Limiter's functions: what each limit counts, and for whom --------------------------

def _address() -> str:
    return f"address:{get_remote_address()}"


def _key() -> str:
    return f"key:{caller().id}"


def _images() -> int:
    return g.get("quota_images", 0)


def _address_requests() -> str:
    return f"{services().settings.upload_requests_per_minute} per minute"


def _address_images() -> str:
    s = services().settings
    return f"{s.anon_images_per_minute} per minute;{s.anon_images_per_hour} per hour"


def _key_images() -> str:
    key = caller()
    if key is None:  # exempt: anonymous requests have the address's limits
        return "1 per day"
    return f"{key.images_per_hour} per hour;{key.images_per_day} per day"


# --- refusals: JSON under /api, the upload page with its message for /upload ------------------

def _too_many(exc: RateLimitExceeded):
    if current_app.view_functions.get(request.endpoint) not in _upload_views:
        return error_response(exc.description, 429)  # the login's own message
    breached = limiter.current_limit
    seconds = max(1, math.ceil(breached.reset_at - time.time())) if breached else 60
    item = exc.limit.limit
    window = item.GRANULARITY.name if item.multiples == 1 else (
        f"{item.multiples} {item.GRANULARITY.name}s")
    message = SPENT[str(exc.limit.scope)].format(amount=item.amount, window=window)
    message += f"; try again in {seconds} s"
    if caller() is None and request.path.startswith("/api/"):
        message += f" (a program with an API key, {api_keys.HEADER}, has a quota of its own)"
    return _refusal(message, 429, {"Retry-After": str(seconds)})


def _too_big(anonymous: Limits, full_bytes: int, full_images: int):
    larger = full_bytes > anonymous.archive_bytes or full_images > anonymous.batch_images
    return _refusal(f"an upload without an API key is limited to "
                    f"{mb(anonymous.archive_bytes)} and {anonymous.batch_images:,} files a "
                    f"request" + _key_hint(f"{mb(full_bytes)} and {full_images:,} files",
                                           larger),
                    413)


def _key_hint(full: str, larger: bool) -> str:
    """What an API key would allow, where it allows more than this request got."""
    if caller() is not None or not larger:
        return ""
    if request.path.startswith("/api/"):
        return f"; with an API key ({api_keys.HEADER}) a request may carry {full}"
    return f"; programs with an API key may send {full} a request to the API"


def _refusal(message: str, status: int, headers: dict[str, str] | None = None):
    if request.path.startswith("/api/"):
        return jsonify(error=message), status, headers or {}
    return (render_template("index.html", limits=limits(), error=message), status,
            headers or {})
