"""The Flask web site and JSON API: uploads in, results out, and the admin back office.

`gunicorn 'frontend:create_app()'` serves it; `flask --app frontend db upgrade`
migrates the database first. It never imports TensorFlow: workers do the
classifying, through Serving.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from core.settings import Settings, get_settings


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """`test_config` may hold Flask settings and SETTINGS, a core Settings to use."""
    test_config = dict(test_config or {})
    settings: Settings = test_config.pop("SETTINGS", None) or get_settings()
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_request_bytes,
        # A batch's files and the form's fields, with room for a batch somewhat over its
        # limit to hear how many files it sent rather than werkzeug's "too large".
        MAX_FORM_PARTS=settings.max_batch_images + 100,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.production,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=settings.production,
        # A form left open over lunch still posts; the token is bound to the session anyway.
        WTF_CSRF_TIME_LIMIT=None,
        RATELIMIT_STORAGE_URI=settings.redis_url,
        RATELIMIT_STORAGE_OPTIONS={"socket_connect_timeout": 2},
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_HEADERS_ENABLED=True,
    )
    app.config.update(test_config)
    app.json.sort_keys = False  # keep documents in the order they are written

    from frontend import (
        admin,
        api,
        commands,
        errors,
        extensions,
        metrics,
        public,
        security,
        services,
        uploads,
    )

    uploads.guard_pixels(settings.max_image_pixels)
    services.init_app(app, settings)
    extensions.init_app(app)
    errors.init_app(app)
    security.init_app(app, settings)
    commands.init_app(app)
    app.register_blueprint(public.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(metrics.bp)
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    return app
