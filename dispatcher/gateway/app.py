"""The Starlette application: routes, error shapes, auth and size limits.

    >>> app = build_app(Gateway(get_runtime(), simulate=True))   # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from anyio import to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dispatcher.gateway import batches, chat, files, models
from dispatcher.gateway.auth import GuardMiddleware
from dispatcher.gateway.errors import HANDLERS
from dispatcher.gateway.openapi import document
from dispatcher.gateway.state import Gateway

THREADS = 256
"""Worker threads for blocking work (an upstream call holds one for its whole duration)."""
MB = 1024 * 1024


async def healthz(request: Request) -> JSONResponse:
    gw = request.app.state.gw
    return JSONResponse({"ok": True, "simulated": gw.simulate})


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)


def build_app(gw: Gateway) -> Starlette:
    limits = gw.config.settings.gateway

    def max_body(path: str) -> int:
        return int((limits.max_file_mb if path == "/v1/files" else limits.max_request_mb) * MB)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        to_thread.current_default_thread_limiter().total_tokens = THREADS
        yield

    routes = [
        Route("/healthz", healthz),
        Route("/openapi.json", openapi),
        Route("/v1/chat/completions", chat.chat_completions, methods=["POST"]),
        Route("/v1/models", models.list_models),
        Route("/v1/models/{model:path}", models.get_model),
        Route("/v1/files", files.upload, methods=["POST"]),
        Route("/v1/files", files.list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", files.get_file, methods=["GET"]),
        Route("/v1/files/{file_id}", files.delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", files.file_content, methods=["GET"]),
        Route("/v1/batches", batches.create, methods=["POST"]),
        Route("/v1/batches", batches.list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", batches.get, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", batches.cancel, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers=HANDLERS, lifespan=lifespan,
                    middleware=[Middleware(GuardMiddleware, tokens=gw.tokens,
                                           max_body=max_body)])
    app.state.gw = gw
    app.state.openapi = document()
    return app
