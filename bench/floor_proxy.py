"""The floor: the least a Python ASGI proxy can add on this machine, for ``bench_gateway``.

A raw ASGI app on uvicorn (the gateway's server and settings) that does only what any
non-blocking proxy with a shared quota must: read the body, one Redis round trip, hand the
blocking work to a thread, POST to the upstream on a pooled ``httpcore`` connection (the
gateway's client), answer with the upstream's bytes. No validation, no routing, no
accounting. ``MODE=inline`` skips the thread (it would block the event loop for the whole
upstream call: not a design, a bound); ``MODE=async`` uses httpcore's and redis-py's
asyncio clients on the loop instead of a thread.

    UPSTREAM=http://127.0.0.1:8001/p/v1/chat/completions REDIS_URL=redis://127.0.0.1:6379/9 \\
        uvicorn --app-dir bench floor_proxy:app --port 8002
"""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor

import httpcore
import redis
import redis.asyncio as aredis

MODE = os.environ.get("MODE", "thread")
URL = os.environ["UPSTREAM"].encode()
HEADERS = [(b"Content-Type", b"application/json"), (b"Authorization", b"Bearer simulated")]
_pool = httpcore.ConnectionPool(max_connections=64, max_keepalive_connections=64)
_apool = httpcore.AsyncConnectionPool(max_connections=64, max_keepalive_connections=64)
_r = redis.Redis.from_url(os.environ["REDIS_URL"])
_ar = aredis.Redis.from_url(os.environ["REDIS_URL"])
_threads = ThreadPoolExecutor(max_workers=64)


def _call(body: bytes) -> bytes:
    _r.ping()
    return _pool.request(b"POST", URL, headers=HEADERS, content=body).content


async def _acall(body: bytes) -> bytes:
    await _ar.ping()
    return (await _apool.request(b"POST", URL, headers=HEADERS, content=body)).content


async def app(scope, receive, send) -> None:  # noqa: ANN001 - raw ASGI
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] == "/healthz":
        out = b"{}"
    else:
        request = json.loads(body)
        request["model"] = os.environ.get("MODEL", "m1")
        upstream = json.dumps(request).encode()
        if MODE == "inline":
            out = _call(upstream)
        elif MODE == "async":
            out = await _acall(upstream)
        else:
            out = await asyncio.get_running_loop().run_in_executor(_threads, _call, upstream)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})
