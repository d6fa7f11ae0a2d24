"""The security headers every response carries: pages, the API, static files and
error pages alike (an after_request hook runs for error handlers' answers too).

The Content-Security-Policy allows scripts, styles and fonts from this site only:
no inline script, no inline style, no `javascript:` URL, so markup that slipped
through escaping cannot run. Templates keep to it: scripts live in static/*.js,
styles in static/style.css, and a value known only at render time goes into a
data-* attribute or an element the browser styles itself (<meter>, <progress>).
Images may also be data: (the empty favicon) and blob: (upload.js's previews).
A route may set any of these headers itself; its own value is kept.
"""

from __future__ import annotations

from flask import Flask, Response

from core.settings import Settings

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors' older twin, for older browsers
    "Referrer-Policy": "same-origin",  # result URLs are secrets: never sent to other sites
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}

#: A year, in production only: the site is then served over HTTPS (its cookies are
#: Secure), and a browser that saw this never tries plain HTTP for it again.
HSTS = "max-age=31536000"


def init_app(app: Flask, settings: Settings) -> None:
    headers = dict(HEADERS)
    if settings.production:
        headers["Strict-Transport-Security"] = HSTS

    @app.after_request
    def security_headers(response: Response) -> Response:
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response
