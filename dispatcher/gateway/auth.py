"""Who may call the gateway, and how large a request may be (one pure-ASGI middleware).

Tokens come from ``DISPATCH_API_KEYS`` (comma-separated) and are compared in constant time
(:func:`hmac.compare_digest` against every token, so the time does not say which one
nearly matched). Without tokens the gateway serves only a loopback address: anyone who
can reach a public port could otherwise spend the providers' quota.

    >>> parse_tokens(" a1, b2 ,,")
    ['a1', 'b2']
    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from dispatcher.gateway.errors import ApiError

OPEN_PATHS = frozenset({"/healthz", "/openapi.json"})
"""Paths that need no token (liveness probes, client generators)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def parse_tokens(raw: str | None) -> list[str]:
    return [t.strip() for t in (raw or "").split(",") if t.strip()]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tokens: list[str]) -> str | None:
    """Why the gateway must not start on ``host`` (None: it may)."""
    if tokens or is_loopback(host):
        return None
    return (f"refusing to serve {host} without tokens: set DISPATCH_API_KEYS "
            "(comma-separated bearer tokens), or listen on 127.0.0.1")


def token_ok(header: str | None, tokens: list[str]) -> bool:
    """Whether an ``Authorization`` header carries one of ``tokens`` (constant time)."""
    if not tokens:
        return True
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    given_b = given.strip().encode()
    ok = False
    for t in tokens:  # no early exit: every token is compared
        ok |= hmac.compare_digest(given_b, t.encode())
    return ok


async def _send_error(send: Send, err: ApiError) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Bearer auth, then a cap on the request body (``Content-Length`` up front, and the
    bytes actually received for chunked uploads)."""

    def __init__(self, app: Any, tokens: list[str], max_body: Callable[[str], int]):
        self.app = app
        self.tokens = tokens
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = {k: v.decode("latin-1") for k, v in scope["headers"]
                   if k in (b"authorization", b"content-length")}
        if path not in OPEN_PATHS and not token_ok(headers.get(b"authorization"), self.tokens):
            await _send_error(send, ApiError(
                401, "missing or invalid bearer token (Authorization: Bearer <token>, one of "
                "DISPATCH_API_KEYS)", "invalid_api_key",
                headers={"www-authenticate": "Bearer"}))
            return
        limit = self.max_body(path)
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await _send_error(send, ApiError(400, "invalid Content-Length", "invalid_request"))
                return
            if int(length) > limit:
                await _send_error(send, _too_large(limit))
                return
            await self.app(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ApiError(413, _too_large(limit).message, "request_too_large")
            return message

        await self.app(scope, counted, send)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body larger than {limit} bytes (settings.yaml gateway.*)",
                    "request_too_large")
