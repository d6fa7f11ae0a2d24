"""The JSON API's contract, as an OpenAPI 3.1 document served at /api/openapi.json.

It states every status each operation can answer and the exact shape of each
body, because tests/test_fuzz_api.py fuzzes the running site from this very
document and fails on a 5xx (other than a documented 503), a status the
document does not list, or a body or header that breaks its schema. Objects
name every field they always carry as required; they stay open to fields
added later. tests/test_web_api.py checks that the document is valid OpenAPI
and lists every /api and /admin/api route. The back office's part is in
frontend/admin/openapi.py.
"""

from __future__ import annotations

from typing import Any

from core.rollout.state import Role

#: The image types the site takes (frontend/uploads.py FORMATS), as multipart parts.
IMAGE_TYPES = "image/jpeg, image/png, image/gif, image/bmp, image/webp"
STATUSES = ["queued", "running", "done", "failed"]


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def json_content(schema: str | dict[str, Any]) -> dict[str, Any]:
    body = ref("schemas", schema) if isinstance(schema, str) else schema
    return {"content": {"application/json": {"schema": body}}}


def error_responses(*statuses: int) -> dict[str, Any]:
    return {str(status): ref("responses", str(status)) for status in statuses}


def path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def object_schema(required: dict[str, Any], optional: dict[str, Any] | None = None,
                  **keywords: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required),
            "properties": required | (optional or {}), **keywords}


def nullable(kind: str, **keywords: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **keywords}


def _upload(summary: str, fields: dict[str, Any], encoding: dict[str, str],
            required: list[str], answer: dict[str, Any], **choice: Any) -> dict[str, Any]:
    """A multipart upload: 202 with the new resource and its URL in Location.
    A program may send an API key (X-API-Key) for its own quota. Other form
    fields are ignored."""
    return {
        "summary": summary,
        "security": [{}, {"apiKey": []}],
        "requestBody": {"required": True, "content": {"multipart/form-data": {
            "schema": {"type": "object", "required": required, "properties": fields,
                       **choice},
            "encoding": {name: {"contentType": kind} for name, kind in encoding.items()}}}},
        "responses": {"202": {"description": "Accepted and queued",
                              "headers": {"Location": ref("headers", "Location")},
                              **json_content(answer)},
                      **error_responses(400, 401, 413, 415, 429, 503)},
    }


def _read(summary: str, parameters: list[dict[str, Any]], ok: dict[str, Any],
          *errors: int) -> dict[str, Any]:
    # A NUL character in an id or a query parameter is refused with a 400 on
    # every route, a database that cannot be reached is a 503 (frontend/errors.py),
    # and an X-API-Key the site does not know is a 401 on every /api route
    # (frontend/quotas.py).
    return {"get": {"summary": summary, "parameters": parameters,
                    "security": [{}, {"apiKey": []}],
                    "responses": {"200": ok, **error_responses(400, 401, *errors, 503)}}}


def _links(what: str) -> dict[str, Any]:
    return {"url": {"type": "string", "description": f"the {what}'s API URL"},
            "page_url": {"type": "string", "description": f"the {what}'s page"}}


def document() -> dict[str, Any]:
    from frontend.admin import openapi as admin

    images = {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}}
    batch = ref("schemas", "Batch")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Image classifier API",
            "version": "1",
            "description": "Upload images, get the model's labels back. Every error is "
                           '`{"error": "..."}` with a 4xx status, or 503 when a service the '
                           "site needs (the database, Serving) is unreachable. Predictions "
                           "are asynchronous: POST answers 202, then GET until `status` is "
                           "`done` or `failed` (`?wait=N` holds the answer up to N seconds). "
                           "Uploads are rate-limited per address (429 with Retry-After); a "
                           "program may send an API key in X-API-Key for a quota of its own.",
        },
        "paths": {
            "/api/predictions": {"post": _upload(
                "Classify one image",
                {"image": {"type": "string", "format": "binary"}}, {"image": IMAGE_TYPES},
                ["image"], {"allOf": [ref("schemas", "Prediction"),
                                      object_schema(_links("prediction"))]})},
            "/api/predictions/{prediction_id}": _read(
                "A prediction's status and, once done, its result",
                [path_id("prediction_id"), {
                    "name": "wait", "in": "query", "required": False,
                    "description": "Seconds (0-30) to hold the answer until the result is in",
                    "schema": {"type": "number", "minimum": 0, "maximum": 30}}],
                {"description": "The prediction", **json_content("Prediction")}, 404),
            "/api/batches": {"post": _upload(
                "Classify many images: files, or a .zip of them",
                {"images": images, "archive": {"type": "string", "format": "binary"}},
                {"images": IMAGE_TYPES, "archive": "application/zip"}, [],
                {"allOf": [batch, object_schema(_links("batch"))]},
                anyOf=[{"required": ["images"]}, {"required": ["archive"]}])},
            "/api/batches/{batch_id}": _read(
                "A batch's progress and counts per class", [path_id("batch_id")],
                {"description": "The batch", **json_content("Batch")}, 404),
            "/api/batches/{batch_id}/predictions": _read(
                "Every prediction of a batch", [path_id("batch_id")],
                {"description": "The predictions", **json_content(object_schema({"predictions": {
                    "type": "array", "items": ref("schemas", "Prediction")}}))}, 404),
            "/api/batches/{batch_id}/results.csv": _read(
                "A batch's results as CSV (a download)", [path_id("batch_id")],
                {"description": "CSV, one row a prediction",
                 "headers": {"Content-Disposition": ref("headers", "Attachment")},
                 "content": {"text/csv": {"schema": {"type": "string"}}}}, 404),
            "/api/batches/{batch_id}/results.json": _read(
                "A batch's results as one JSON document (a download)", [path_id("batch_id")],
                {"description": "The batch and its predictions",
                 "headers": {"Content-Disposition": ref("headers", "Attachment")},
                 **json_content({"allOf": [batch, object_schema({"predictions": {
                     "type": "array", "items": ref("schemas", "Prediction")}})]})}, 404),
            "/api/models": {"get": {
                "summary": "The model versions Serving reports, with their states",
                "security": [{}, {"apiKey": []}],
                "responses": {"200": {"description": "Versions", **json_content("Models")},
                              **error_responses(401, 404, 503)},
            }},
            **admin.paths(),
            "/api/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", **json_content(
                    object_schema({"openapi": {"type": "string"}, "paths": {"type": "object"}}))}},
            }},
        },
        "components": components(),
    }


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, **extra, **json_content("Error")}


def components() -> dict[str, Any]:
    from frontend.admin import openapi as admin

    text, count = {"type": "string"}, {"type": "integer", "minimum": 0}
    when = {"type": "string", "format": "date-time"}
    return {
        "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "An administrator's token for /admin/api/ (`flask create-token NAME`)"},
            "apiKey": {
            "type": "apiKey", "in": "header", "name": "X-API-Key",
            "description": "Optional: a program's key, for a quota of its own "
                           "(`flask create-api-key`); an unknown or revoked key is a 401"}},
        "headers": {
            "Location": {"description": "The new resource's API URL", "required": True,
                         "schema": text},
            "Attachment": {"description": "attachment; filename=...", "required": True,
                           "schema": {"type": "string", "pattern": "^attachment"}},
            "Retry-After": {"description": "Seconds until the limit lets a request through",
                            "required": True, "schema": {"type": "string",
                                                         "pattern": "^[0-9]+$"}},
        },
        "responses": {
            "400": _error("The request is malformed: a missing file field, a bad parameter, "
                          "a NUL character, a damaged image or archive"),
            "401": _error("The X-API-Key is unknown or revoked, or (under /admin/api/) no "
                          "administrator's session or live token came with the request"),
            "409": _error("The resource is not in a state that allows this"),
            "404": _error("No such resource"),
            "413": _error("The request, an image or an archive is over its limit (bytes, "
                          "pixels, files in a batch)"),
            "415": _error("Not an image of a type the site takes (JPEG, PNG, GIF, BMP, "
                          "WebP; read from the content, not the name)"),
            "429": _error("Too many uploads from this address or API key",
                          headers={"Retry-After": ref("headers", "Retry-After")}),
            "503": _error("A service the site needs (the database, Serving) is unreachable"),
        },
        "schemas": {
            "Error": object_schema({"error": {"type": "string", "minLength": 1}}),
            "Prediction": object_schema({
                "id": text,
                "status": {"enum": STATUSES},
                "filename": text,
                "source": {"enum": ["page", "api", "batch"]},
                "batch_id": nullable("string"),
                "created_at": when,
                "width": count, "height": count, "size_bytes": count,
            }, {
                "finished_at": when,
                "label": text,
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "uncertain": {"type": "boolean",
                              "description": "the confidence is under the site's "
                                             "UNCERTAIN_BELOW (the result page asks "
                                             "'not sure: X or Y?')"},
                "top_k": {"type": "array", "items": object_schema(
                    {"label": text, "score": {"type": "number"}})},
                "model_version": {"type": "integer", "description": "the version that answered"},
                "model_role": {"enum": [*(r.value for r in Role), None],
                               "description": "the roll-out side that answered (null: "
                                              "answered before roll-outs were recorded)"},
                "seconds": {"type": "number", "description": "upload to result"},
                "serving_ms": nullable("number"),
                "error": nullable("string", description="why it failed"),
            }, allOf=[
                {"if": {"properties": {"status": {"const": "done"}}},
                 "then": {"required": ["label", "confidence", "uncertain", "top_k",
                                       "model_version", "model_role", "finished_at", "seconds",
                                       "serving_ms"]}},
                {"if": {"properties": {"status": {"const": "failed"}}},
                 "then": {"required": ["error", "finished_at"]}},
            ]),
            "Batch": object_schema({
                "id": text,
                "name": nullable("string", description="the first archive's name"),
                "created_at": when,
                "total": count,
                "counts": object_schema(dict.fromkeys(STATUSES, count)),
                "finished": count,
                "progress": {"type": "number", "minimum": 0, "maximum": 1},
                "complete": {"type": "boolean"},
                "labels": {"type": "object", "additionalProperties": count},
                "rejected": {"type": "array",
                             "items": object_schema({"name": text, "error": text})},
            }),
            **admin.schemas(),
            "Models": object_schema({
                "model": text,
                "versions": {"type": "array", "items": object_schema({
                    "version": {"type": "integer"},
                    "state": {"enum": ["START", "LOADING", "AVAILABLE", "UNLOADING", "END",
                                       "UNKNOWN"]},
                    "error": nullable("string")})}}),
        },
    }
