"""``"stream": true``: Server-Sent Events in OpenAI's chunk format, ending ``data: [DONE]``.

The upstream is always asked for ``stream_options.include_usage`` (so quota is reconciled
with the real usage); the client gets the usage chunk only if it asked for it too. Nothing
is sent to the client until the first chunk arrives: until then a failing target is
retried or replaced and errors are ordinary JSON errors with their status; after it, an
error can only travel as a final ``data: {"error": ...}`` event.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from dispatcher.batchfile import JobSpec
from dispatcher.gateway import engine
from dispatcher.gateway.errors import api_error_for

_background: set[asyncio.Task] = set()


def for_client(chunk: dict[str, Any], include_usage: bool) -> dict[str, Any] | None:
    """The chunk as this client asked for it (None: drop it)."""
    if include_usage:
        return chunk
    if not chunk.get("choices") and "usage" in chunk:
        return None  # the usage-only chunk the client did not ask for
    if "usage" in chunk:
        chunk = {k: v for k, v in chunk.items() if k != "usage"}
    return chunk


def completion_chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A whole completion (an upstream that ignored ``stream``) as chunks."""
    base = {k: body[k] for k in ("id", "created", "model") if k in body}
    base["object"] = "chat.completion.chunk"
    chunks = []
    for c in body.get("choices") or []:
        delta = {k: v for k, v in (c.get("message") or {}).items() if v is not None}
        chunks.append({**base, "choices": [{"index": c.get("index", 0), "delta": delta,
                                            "finish_reason": c.get("finish_reason")}]})
    chunks.append({**base, "choices": [], "usage": body.get("usage")})
    return chunks


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


async def respond(gw, spec: JobSpec, wait_s: float, include_usage: bool) -> Response:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    began = threading.Event()
    progress: dict[str, int] = {}

    def on_chunk(target: str, chunk: dict[str, Any]) -> None:  # in the calling thread
        first = not began.is_set()
        began.set()
        if first:
            loop.call_soon_threadsafe(queue.put_nowait, ("start", target))
        loop.call_soon_threadsafe(queue.put_nowait, ("chunk", chunk))

    async def drive() -> None:
        try:
            result = await engine.run(gw, spec, wait_s, stream=True, on_chunk=on_chunk,
                                      started=began.is_set, progress=progress)
            queue.put_nowait(("end", result))
            engine.record_usage(gw, result)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI error
            queue.put_nowait(("error", api_error_for(exc, "streamed chat completion")))

    task = asyncio.create_task(drive())
    _background.add(task)
    task.add_done_callback(_background.discard)
    kind, value = await queue.get()
    if kind == "error":
        return value.response()
    if kind == "end":  # a whole answer, not a stream: send it as chunks
        target, attempts = value.target, value.attempts
        pending = [("chunk", c) for c in completion_chunks(value.outcome.body)]
        pending.append(("end", value))
    else:
        target, attempts, pending = value, progress.get("attempts", 1), []

    async def events() -> AsyncIterator[bytes]:
        backlog = list(pending)
        while True:
            kind, value = backlog.pop(0) if backlog else await queue.get()
            if kind == "chunk":
                out = for_client(value, include_usage)
                if out is not None:
                    yield _event(out)
            elif kind == "error":
                yield _event(value.body())
                yield DONE
                return
            elif kind == "end":
                yield DONE
                return

    headers = {"X-Dispatch-Target": target, "X-Dispatch-Attempts": str(attempts),
               "Cache-Control": "no-cache"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
