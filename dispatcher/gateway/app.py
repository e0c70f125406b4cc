"""The Starlette application: routes, error shapes, auth and size limits.

    >>> app = build_app(Gateway(get_runtime(), simulate=True))   # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dispatcher.gateway import batches, chat, files, models
from dispatcher.gateway.auth import GuardMiddleware
from dispatcher.gateway.errors import HANDLERS
from dispatcher.gateway.openapi import document
from dispatcher.gateway.state import Gateway

Endpoint = Callable[[Request], Awaitable[Response]]
MB = 1024 * 1024


async def healthz(request: Request) -> JSONResponse:
    gw = request.app.state.gw
    return JSONResponse({"ok": True, "simulated": gw.simulate})


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)


def _route(path: str, **handlers: Endpoint) -> Route:
    """One route per path, whatever its methods, so a 405 lists them all in ``Allow``."""

    async def endpoint(request: Request) -> Response:  # HEAD is served as GET
        return await handlers.get(request.method, handlers.get("GET"))(request)

    return Route(path, endpoint, methods=list(handlers))


def build_app(gw: Gateway) -> Starlette:
    limits = gw.config.settings.gateway

    def max_body(path: str) -> int:
        return int((limits.max_file_mb if path == "/v1/files" else limits.max_request_mb) * MB)

    routes = [
        _route("/healthz", GET=healthz),
        _route("/openapi.json", GET=openapi),
        _route("/v1/chat/completions", POST=chat.chat_completions),
        _route("/v1/models", GET=models.list_models),
        _route("/v1/models/{model:path}", GET=models.get_model),
        _route("/v1/files", POST=files.upload, GET=files.list_files),
        _route("/v1/files/{file_id}", GET=files.get_file, DELETE=files.delete_file),
        _route("/v1/files/{file_id}/content", GET=files.file_content),
        _route("/v1/batches", POST=batches.create, GET=batches.list_batches),
        _route("/v1/batches/{batch_id}", GET=batches.get),
        _route("/v1/batches/{batch_id}/cancel", POST=batches.cancel),
    ]
    guard = Middleware(GuardMiddleware, tokens=gw.tokens, max_body=max_body)
    app = Starlette(routes=routes, exception_handlers=HANDLERS, middleware=[guard])
    app.state.gw = gw
    app.state.openapi = document()
    return app
