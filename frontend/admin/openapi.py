"""The back office's part of the OpenAPI document (frontend/openapi.py): its JSON
under /admin/api/, for programs with an administrator's bearer token.

Two operations start real work and are never fuzzed (tests/test_fuzz_api.py):
starting a training run, and promoting a version by hand.
"""

from __future__ import annotations

from typing import Any

from core.rollout.state import MAX_CANARY_SHARE, Mode
from core.training import RunStatus
from frontend.openapi import (
    STATUSES,
    error_responses,
    json_content,
    nullable,
    object_schema,
    path_id,
    ref,
)


def paths() -> dict[str, Any]:
    """The back office's JSON under /admin/api/, for programs with a bearer token
    (frontend/tokens.py): every operation can answer 401."""
    run, runs = ref("schemas", "TrainingRun"), {"type": "array",
                                                 "items": ref("schemas", "TrainingRun")}
    filters = [{"name": name, "in": "query", "required": False, "schema": schema}
               for name, schema in [("label", {"type": "string"}),
                                    ("status", {"enum": STATUSES}),
                                    ("source", {"enum": ["page", "api", "batch"]}),
                                    ("model_version", {"type": "integer", "minimum": 0}),
                                    ("date_from", {"type": "string", "format": "date"}),
                                    ("date_to", {"type": "string", "format": "date"}),
                                    ("below", {"type": "number", "minimum": 0, "maximum": 1}),
                                    ("reviewed", {"enum": ["yes", "no", "right", "wrong"]}),
                                    ("true_label", {"type": "string"}),
                                    ("unsure", {"enum": ["yes", "no"]})]]
    page = {"name": "page", "in": "query", "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 10**6}}
    records = {"type": "array", "items": ref("schemas", "Record")}

    def op(summary: str, ok: dict[str, Any], *errors: int, status: str = "200",
           parameters: list | None = None, body: dict | None = None) -> dict[str, Any]:
        found = {"summary": summary, "security": [{"bearer": []}],
                 "parameters": parameters or [],
                 "responses": {status: {"description": summary, **json_content(ok)},
                               **error_responses(400, 401, *errors, 503)}}
        if body is not None:
            found["requestBody"] = {"required": True, **json_content(body)}
        return found

    count = {"type": "integer", "minimum": 0}
    deleted = object_schema({"id": {"type": "string"}, "deleted": object_schema(dict.fromkeys(
        ["records", "batches", "images", "thumbnails", "manifests"], count))})
    return {
        "/admin/api/predictions/{prediction_id}": {"delete": op(
            "Delete a record, and its image and thumbnail unless another record shares them",
            deleted, 404, parameters=[path_id("prediction_id")])},
        "/admin/api/batches/{batch_id}": {"delete": op(
            "Delete a batch and every record of it", deleted, 404,
            parameters=[path_id("batch_id")])},
        "/admin/api/predictions/{prediction_id}/review": {"post": op(
            "Review a record: its predicted label means right, another class wrong",
            ref("schemas", "Record"), 404, 409, parameters=[path_id("prediction_id")],
            body=object_schema({"label": {"type": "string"}}))},
        "/admin/api/review-queue": {"get": op(
            "The review queue's next records", object_schema({
                "records": {"type": "array", "items": {"allOf": [ref("schemas", "Record"),
                                                                 object_schema({
                    "classes": {"type": "array", "items": {"type": "string"}},
                    "image_url": {"type": "string"}, "record_url": {"type": "string"},
                    "margin": nullable("number")})]}},
                "total": {"type": "integer"},
                "reviewed_per_class": {"type": "object",
                                       "additionalProperties": {"type": "integer"}}}),
            parameters=filters)},
        "/admin/api/records": {"get": op(
            "The records, filtered, a page at a time", object_schema({
                "total": {"type": "integer"}, "page": {"type": "integer"},
                "page_size": {"type": "integer"}, "records": records}),
            parameters=[*filters, page])},
        "/admin/api/stats": {"get": op("The records' and the queue's figures", object_schema({
            "total": {"type": "integer"}, "statuses": {"type": "object"},
            "confusion": {"type": "object"}, "queue": {"type": "object"},
            "mean_serving_ms": nullable("number")}))},
        "/admin/api/training-runs": {
            "get": op("The training runs, newest first", object_schema({"runs": runs})),
            "post": op("Start a training run (a real one: never fuzzed)", run, 409,
                       status="202")},
        "/admin/api/training-runs/{run_id}": {"get": op(
            "One training run", run, 404, parameters=[path_id("run_id")])},
        "/admin/api/training-runs/{run_id}/cancel": {"post": op(
            "Cancel a queued or running training run", run, 404, 409,
            parameters=[path_id("run_id")])},
        "/admin/api/rollout": {
            "get": op("The roll-out state", ref("schemas", "Rollout")),
            "put": op("Change the roll-out state; every version named must be AVAILABLE",
                      ref("schemas", "Rollout"), 409, body=ref("schemas", "Rollout"))},
        "/admin/api/rollout/auto-canary": {"put": op(
            "Whether a version passing the training gate becomes the canary",
            object_schema({"auto_canary": {"type": "boolean"}}), 409,
            body=object_schema({"enabled": {"type": "boolean"}}))},
        "/admin/api/models/{version}/promote": {"post": op(
            "Serve a candidate version by hand (never fuzzed)", object_schema({
                "version": {"type": "integer"}, "promoted": {"const": True},
                "message": {"type": "string"}}), 404, 409,
            parameters=[{"name": "version", "in": "path", "required": True,
                         "schema": {"type": "integer", "minimum": 0}}])},
    }


def schemas() -> dict[str, Any]:
    text, when = {"type": "string"}, {"type": "string", "format": "date-time"}
    return {
        "Record": {"allOf": [ref("schemas", "Prediction"), object_schema({
            "correct": nullable("boolean"), "true_label": nullable("string"),
            "reviewed_by": nullable("string"), "reviewed_at": nullable("string")})]},
        "Rollout": object_schema({
            "mode": {"enum": [m.value for m in Mode]},
            "stable": nullable("integer"), "canary": nullable("integer"),
            "canary_share": {"type": "number", "minimum": 0, "maximum": MAX_CANARY_SHARE},
            "shadow": nullable("integer")}),
        "TrainingRun": object_schema({
            "id": text, "status": {"enum": [s.value for s in RunStatus]},
            "phase": nullable("string"),
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "eta_seconds": nullable("number"), "version": nullable("integer"),
            "message": nullable("string"), "gate": nullable("object"),
            "base_images": nullable("integer"), "reviewed_images": nullable("integer"),
            "requested_by": nullable("string"), "created_at": when,
            "started_at": nullable("string"), "finished_at": nullable("string"),
            "cancel_requested": {"type": "boolean"}}),
    }
