"""The gateway's OpenAPI 3.0 document, served at ``/openapi.json``.

Written by hand, next to the handlers it describes, and checked by schemathesis
(tests/test_gateway_schema.py): every status a handler returns is listed, and request
schemas declare only what the gateway itself validates (the rest of a chat request is
passed to the upstream as is).
"""

from __future__ import annotations

from typing import Any

from dispatcher.chat_body import ROLES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "invalid request", 401: "missing or wrong bearer token",
            404: "not found", 409: "conflict", 413: "request body too large",
            429: "no capacity within the allowed wait (see Retry-After)",
            502: "every target failed without a usable answer",
            503: "the quota store is unreachable (nothing was sent)"}
    out: dict[str, Any] = {}
    for c in codes:
        out[str(c)] = _json(_ref("Error"), text[c])
        if c == 429:
            out[str(c)]["headers"] = {"Retry-After": {"schema": {"type": "string"},
                                                      "description": "whole seconds"}}
    return out


_DISPATCH_HEADERS = {
    "X-Dispatch-Target": {"schema": {"type": "string"}, "description": "provider/model"},
    "X-Dispatch-Attempts": {"schema": {"type": "string"}, "description": "attempts made"},
}
_STR = {"type": "string"}
_INT = {"type": "integer"}
_NULL_INT = {"type": "integer", "nullable": True}
_NULL_STR = {"type": "string", "nullable": True}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {"message": _STR, "type": _STR, "param": _NULL_STR, "code": _NULL_STR}}}},
    "ChatRequest": {
        "type": "object", "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "example": "fast",
                      "description": "a tag (fast) or a target (provider/model)"},
            "messages": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["role"], "properties": {"role": {
                    "type": "string", "example": "user", "enum": sorted(ROLES)}}}},
            "max_tokens": {"type": "integer", "minimum": 1, "nullable": True},
            "max_completion_tokens": {"type": "integer", "minimum": 1, "nullable": True},
            "stream": {"type": "boolean", "nullable": True},
            "stream_options": {"type": "object", "nullable": True, "properties": {
                "include_usage": {"type": "boolean"}}},
        }},
    "ChatCompletion": {"type": "object", "required": ["choices"], "properties": {
        "id": _STR, "object": _STR, "created": _INT, "model": _STR,
        "choices": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": "object", "nullable": True}}},
    "Model": {"type": "object", "required": ["id", "object", "created", "owned_by", "enabled"],
              "properties": {"id": _STR, "object": {"type": "string", "enum": ["model"]},
                             "created": _INT, "owned_by": _STR, "enabled": {"type": "boolean"},
                             "kind": {"type": "string", "enum": ["tag", "target"]}}},
    "ModelList": {"type": "object", "required": ["object", "data"], "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": _ref("Model")}}},
    "File": {"type": "object",
             "required": ["id", "object", "bytes", "created_at", "filename", "purpose"],
             "properties": {"id": _STR, "object": {"type": "string", "enum": ["file"]},
                            "bytes": _INT, "created_at": _INT, "filename": _STR,
                            "purpose": _STR, "status": _STR}},
    "FileList": {"type": "object", "required": ["object", "data", "has_more"], "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": _ref("File")},
        "first_id": _NULL_STR, "last_id": _NULL_STR, "has_more": {"type": "boolean"}}},
    "FileDeleted": {"type": "object", "required": ["id", "object", "deleted"], "properties": {
        "id": _STR, "object": _STR, "deleted": {"type": "boolean"}}},
    "BatchRequest": {
        "type": "object", "required": ["input_file_id", "endpoint", "completion_window"],
        "properties": {
            "input_file_id": {"type": "string", "minLength": 1},
            "endpoint": {"type": "string", "enum": ["/v1/chat/completions"]},
            "completion_window": {"type": "string", "enum": ["24h"]},
            "metadata": {"type": "object", "nullable": True, "maxProperties": 16,
                         "additionalProperties": {"type": "string", "maxLength": 512}}}},
    "Batch": {
        "type": "object",
        "required": ["id", "object", "endpoint", "input_file_id", "completion_window",
                     "status", "created_at", "request_counts"],
        "properties": {
            "id": _STR, "object": {"type": "string", "enum": ["batch"]}, "endpoint": _STR,
            "input_file_id": _STR, "completion_window": _STR,
            "status": {"type": "string", "enum": [
                "validating", "failed", "in_progress", "finalizing", "completed", "expired",
                "cancelling", "cancelled"]},
            "output_file_id": _NULL_STR, "error_file_id": _NULL_STR,
            "errors": {"type": "object", "nullable": True, "properties": {
                "object": _STR, "data": {"type": "array", "items": {
                    "type": "object", "properties": {"code": _STR, "message": _STR,
                                                     "param": _NULL_STR, "line": _NULL_INT}}}}},
            **{k: _NULL_INT for k in ("created_at", "in_progress_at", "expires_at",
                                      "finalizing_at", "completed_at", "failed_at",
                                      "expired_at", "cancelling_at", "cancelled_at")},
            "request_counts": {"type": "object", "required": ["total", "completed", "failed"],
                               "properties": {"total": _INT, "completed": _INT,
                                              "failed": _INT}},
            "metadata": {"type": "object", "nullable": True,
                         "additionalProperties": _STR}}},
    "BatchList": {"type": "object", "required": ["object", "data", "has_more"], "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": _ref("Batch")},
        "first_id": _NULL_STR, "last_id": _NULL_STR, "has_more": {"type": "boolean"}}},
}


def _id_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _paging(max_limit: int) -> list[dict[str, Any]]:
    return [{"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": max_limit}}]


def document() -> dict[str, Any]:
    chat_ok = _json(_ref("ChatCompletion"), "the completion")
    chat_ok["content"]["text/event-stream"] = {"schema": {  # one event (OpenAPI < 3.2)
        "type": "object", "required": ["data"], "properties": {
            "data": {"type": "string",
                     "description": "a chat.completion.chunk as JSON; the last is [DONE]"},
            "event": _STR}}}
    chat_ok["headers"] = _DISPATCH_HEADERS
    return {
        "openapi": "3.0.3",
        "info": {"title": "llm-dispatch gateway", "version": "1.0",
                 "description": "OpenAI-compatible chat completions, models, files and "
                                "batches over the dispatcher's routing and quotas."},
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"security": [], "operationId": "healthz", "responses": {
                "200": _json({"type": "object", "required": ["ok"],
                              "properties": {"ok": {"type": "boolean"}}}, "alive")}}},
            "/v1/chat/completions": {"post": {
                "operationId": "createChatCompletion",
                "parameters": [{"name": "X-Dispatch-Max-Wait", "in": "header", "required": False,
                                "schema": {"type": "number", "minimum": 0}}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("ChatRequest")}}},
                "responses": {"200": chat_ok,
                              **_errors(400, 401, 404, 413, 429, 502, 503)}}},
            "/v1/models": {"get": {"operationId": "listModels", "responses": {
                "200": _json(_ref("ModelList"), "tags and targets"), **_errors(401)}}},
            "/v1/models/{model}": {"get": {
                "operationId": "retrieveModel", "parameters": [_id_param("model")],
                "responses": {"200": _json(_ref("Model"), "a tag or target"),
                              **_errors(401, 404)}}},
            "/v1/files": {
                "post": {"operationId": "createFile", "requestBody": {"required": True, "content": {
                    "multipart/form-data": {"schema": {
                        "type": "object", "required": ["file", "purpose"],
                        "additionalProperties": False, "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "purpose": {"type": "string", "enum": ["batch"]}}}}}},
                    "responses": {"200": _json(_ref("File"), "the stored file"),
                                  **_errors(400, 401, 413)}},
                "get": {"operationId": "listFiles", "parameters": [
                    *_paging(10000),
                    {"name": "purpose", "in": "query", "required": False, "schema": _STR}],
                    "responses": {"200": _json(_ref("FileList"), "files, newest first"),
                                  **_errors(400, 401)}}},
            "/v1/files/{file_id}": {
                "get": {"operationId": "retrieveFile", "parameters": [_id_param("file_id")],
                        "responses": {"200": _json(_ref("File"), "the file"),
                                      **_errors(401, 404)}},
                "delete": {"operationId": "deleteFile", "parameters": [_id_param("file_id")],
                           "responses": {"200": _json(_ref("FileDeleted"), "deleted"),
                                         **_errors(401, 404)}}},
            "/v1/files/{file_id}/content": {"get": {
                "operationId": "downloadFile", "parameters": [_id_param("file_id")],
                "responses": {"200": {"description": "the raw bytes", "content": {
                    "application/octet-stream": {"schema": {"type": "string",
                                                            "format": "binary"}}}},
                    **_errors(401, 404)}}},
            "/v1/batches": {
                "post": {"operationId": "createBatch", "requestBody": {"required": True,
                         "content": {"application/json": {"schema": _ref("BatchRequest")}}},
                         "responses": {"200": _json(_ref("Batch"), "the batch"),
                                       **_errors(400, 401, 404, 413)}},
                "get": {"operationId": "listBatches", "parameters": _paging(100),
                        "responses": {"200": _json(_ref("BatchList"), "batches, newest first"),
                                      **_errors(400, 401)}}},
            "/v1/batches/{batch_id}": {"get": {
                "operationId": "retrieveBatch", "parameters": [_id_param("batch_id")],
                "responses": {"200": _json(_ref("Batch"), "the batch"), **_errors(401, 404)}}},
            "/v1/batches/{batch_id}/cancel": {"post": {
                "operationId": "cancelBatch", "parameters": [_id_param("batch_id")],
                "responses": {"200": _json(_ref("Batch"), "the batch, cancelling"),
                              **_errors(401, 404, 409)}}},
        },
    }
