"""The back office under /admin: records and their review, statistics and models.

Every page but the login needs a logged-in administrator. The guard below
stands before every route of the blueprint, so no route repeats it; under
/admin/api/ it answers 401 JSON instead of redirecting (frontend/extensions.py).
Each area's routes live in a module of their own, which registers them on `bp`.
"""

from __future__ import annotations

from flask import Blueprint, request
from flask_login import current_user

from frontend.extensions import login_manager
from frontend.forms import LogoutForm

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def require_admin():
    if request.endpoint != "admin.login" and not current_user.is_authenticated:
        return login_manager.unauthorized()
    return None


@bp.app_context_processor
def logout_form():
    # formdata=None: built for every page, it must not read the request (a
    # page answering 413 would fail again on the body it refused).
    return {"logout_form": LogoutForm(formdata=None)}


# Imported for their routes, once `bp` exists for them to register on.
from frontend.admin import (  # noqa: E402, F401
    api,
    auth,
    models,
    records,
    review_queue,
    rollout,
    sessions,
    stats,
)
