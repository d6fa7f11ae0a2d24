"""/admin/api/rollout: the roll-out state for programs and the models page."""

from __future__ import annotations

from flask import abort, jsonify, request
from flask_login import current_user

from core.rollout.state import RolloutError
from frontend import rollout
from frontend.admin.api import api
from frontend.services import services


@api.get("/rollout")
def read_rollout():
    return jsonify(rollout.current(services()).state.as_json())


@api.put("/rollout")
def change_rollout():
    """The whole state: {"mode", "stable", "canary", "canary_share", "shadow"}."""
    body = request.get_json(silent=True)
    try:
        state = rollout.change(services(), body, by=current_user.username)
    except RolloutError as exc:
        abort(400, str(exc))
    except (rollout.NotAvailable, rollout.Changed) as exc:
        abort(409, str(exc))
    except rollout.ServingDown as exc:
        abort(503, str(exc))
    return jsonify(state.as_json())


@api.put("/rollout/auto-canary")
def change_auto_canary():
    """{"enabled": true|false}: whether a version passing the gate becomes the canary."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("enabled"), bool):
        abort(400, 'send {"enabled": true} or {"enabled": false}')
    try:
        saved = rollout.set_auto_canary(services(), body["enabled"], by=current_user.username)
    except rollout.Changed as exc:
        abort(409, str(exc))
    return jsonify(auto_canary=saved.auto_canary)
