"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``, all four keys.

Every client mistake is a 4xx with a code the SDKs understand; a 500 only ever means a bug
here (and then the message says nothing about internals).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from workers.quota.engine import QuotaUnavailable

log = logging.getLogger("dispatch.gateway")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
          413: "invalid_request_error", 415: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error"}


class ApiError(Exception):
    """Raised anywhere in a handler; becomes the matching OpenAI error response."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 param: str | None = None, type_: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.type = type_ or _TYPES.get(status, "api_error" if status >= 500 else
                                        "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(message: str, type_: str, code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown path, wrong method) in OpenAI's shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "unknown_url", 405: "method_not_allowed"}.get(exc.status_code)
    message = exc.detail if exc.status_code not in (404, 405) else (
        f"{exc.detail}: {request.method} {request.url.path}")
    return ApiError(exc.status_code, str(message), code, headers=exc.headers).response()


def api_error_for(exc: BaseException, where: str) -> ApiError:
    """Any exception as the error a client gets: Redis (the quota store) unreachable is a
    503 (nothing was sent upstream: fail closed); anything else is a bug here, a 500."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RedisError | QuotaUnavailable):
        log.error("quota store unavailable on %s: %s", where, exc)
        return ApiError(503, "the quota store (Redis) is unreachable; nothing was sent",
                        "quota_store_unavailable", type_="server_error",
                        headers={"Retry-After": "5"})
    log.error("internal error on %s", where, exc_info=exc)
    return ApiError(500, "internal error in the gateway (see its log)", "internal_error",
                    type_="server_error")


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    return api_error_for(exc, f"{request.method} {request.url.path}").response()


HANDLERS = {ApiError: api_error_handler, HTTPException: http_error_handler,
            RedisError: internal_error_handler, QuotaUnavailable: internal_error_handler,
            Exception: internal_error_handler}
