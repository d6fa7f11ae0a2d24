"""The JSON API's contract, as an OpenAPI 3.1 document served at /api/openapi.json.

A test checks that it is a valid OpenAPI document and that every /api route
of the app is in it.
"""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/responses/Error"}


def _json(schema: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def document() -> dict[str, Any]:
    images = {"type": "array", "items": {"type": "string", "format": "binary"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Image classifier API",
            "version": "1",
            "description": "Upload images, get the model's labels back. Every error is "
                           '`{"error": "..."}` with a 4xx or 5xx status. Predictions are '
                           "asynchronous: POST answers 202, then GET until `status` is "
                           "`done` or `failed` (`?wait=N` holds the answer up to N seconds).",
        },
        "paths": {
            "/api/predictions": {"post": {
                "summary": "Classify one image",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}}}}}},
                "responses": {"202": {"description": "Accepted and queued",
                                      **_json("Prediction")},
                              "400": ERROR, "413": ERROR, "415": ERROR},
            }},
            "/api/predictions/{prediction_id}": {"get": {
                "summary": "A prediction's status and, once done, its result",
                "parameters": [_id("prediction_id"), {
                    "name": "wait", "in": "query", "required": False,
                    "description": "Seconds (0-30) to hold the answer until the result is in",
                    "schema": {"type": "number", "minimum": 0, "maximum": 30}}],
                "responses": {"200": {"description": "The prediction", **_json("Prediction")},
                              "400": ERROR, "404": ERROR},
            }},
            "/api/batches": {"post": {
                "summary": "Classify many images: files, or a .zip of them",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object",
                    "properties": {"images": images,
                                   "archive": {"type": "string", "format": "binary"}}}}}},
                "responses": {"202": {"description": "Accepted; files that are not images "
                                                     "are listed in `rejected`",
                                      **_json("Batch")},
                              "400": ERROR, "413": ERROR, "415": ERROR},
            }},
            "/api/batches/{batch_id}": {"get": {
                "summary": "A batch's progress and counts per class",
                "parameters": [_id("batch_id")],
                "responses": {"200": {"description": "The batch", **_json("Batch")},
                              "404": ERROR},
            }},
            "/api/batches/{batch_id}/predictions": {"get": {
                "summary": "Every prediction of a batch",
                "parameters": [_id("batch_id")],
                "responses": {"200": {"description": "The predictions", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "predictions": {"type": "array", "items": {
                            "$ref": "#/components/schemas/Prediction"}}}}}}},
                    "404": ERROR},
            }},
            "/api/batches/{batch_id}/results.csv": {"get": {
                "summary": "A batch's results as CSV",
                "parameters": [_id("batch_id")],
                "responses": {"200": {"description": "CSV", "content": {"text/csv": {}}},
                              "404": ERROR},
            }},
            "/api/batches/{batch_id}/results.json": {"get": {
                "summary": "A batch's results as one JSON document",
                "parameters": [_id("batch_id")],
                "responses": {"200": {"description": "JSON", **_json("Batch")}, "404": ERROR},
            }},
            "/api/models": {"get": {
                "summary": "The model versions Serving reports, with their states",
                "responses": {"200": {"description": "Versions", **_json("Models")},
                              "503": ERROR},
            }},
            "/api/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": {"application/json": {}}}},
            }},
        },
        "components": {
            "responses": {"Error": {"description": "An error", **_json("Error")}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}}},
                "Prediction": {"type": "object", "required": ["id", "status"], "properties": {
                    "id": {"type": "string"},
                    "status": {"enum": ["queued", "running", "done", "failed"]},
                    "filename": {"type": "string"},
                    "source": {"enum": ["page", "api", "batch"]},
                    "batch_id": {"type": ["string", "null"]},
                    "created_at": {"type": "string", "format": "date-time"},
                    "finished_at": {"type": "string", "format": "date-time"},
                    "label": {"type": "string", "description": "when done"},
                    "confidence": {"type": "number"},
                    "uncertain": {"type": "boolean",
                                  "description": "when done: the confidence is under the "
                                                 "site's UNCERTAIN_BELOW (the result page "
                                                 "asks 'not sure: X or Y?')"},
                    "top_k": {"type": "array", "items": {
                        "type": "object", "properties": {"label": {"type": "string"},
                                                         "score": {"type": "number"}}}},
                    "model_version": {"type": "integer",
                                      "description": "the version that answered"},
                    "seconds": {"type": "number", "description": "upload to result"},
                    "serving_ms": {"type": "number"},
                    "error": {"type": "string", "description": "when failed"},
                    "url": {"type": "string"}, "page_url": {"type": "string"},
                }},
                "Batch": {"type": "object", "required": ["id", "total"], "properties": {
                    "id": {"type": "string"},
                    "total": {"type": "integer"},
                    "counts": {"type": "object",
                               "additionalProperties": {"type": "integer"}},
                    "finished": {"type": "integer"},
                    "progress": {"type": "number"},
                    "complete": {"type": "boolean"},
                    "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "rejected": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "error": {"type": "string"}}}},
                }},
                "Models": {"type": "object", "properties": {
                    "model": {"type": "string"},
                    "versions": {"type": "array", "items": {"type": "object", "properties": {
                        "version": {"type": "integer"},
                        "state": {"type": "string"},
                        "error": {"type": ["string", "null"]}}}}}},
            },
        },
    }
