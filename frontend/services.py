"""What the site's requests share: the app's connections (core/lifecycle) and the
upload limits its settings set (smaller for a request without an API key:
frontend/quotas.py)."""

from __future__ import annotations

from flask import current_app, g

from core.lifecycle.connections import Connections
from frontend.uploads import Limits


def services() -> Connections:
    return current_app.extensions["classifier"]


def limits() -> Limits:
    """This request's upload limits."""
    return g.get("upload_limits") or current_app.extensions["upload_limits"]


def init_app(app, settings) -> None:
    app.extensions["classifier"] = Connections.from_settings(settings)
    app.extensions["upload_limits"] = Limits.from_settings(settings)
