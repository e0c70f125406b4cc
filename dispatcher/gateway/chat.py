"""``POST /v1/chat/completions``: validate as a batch line, then serve through the engine."""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dispatcher.batchfile import BatchInvalid, JobSpec, parse_job
from dispatcher.gateway import engine, stream
from dispatcher.gateway.errors import ApiError
from dispatcher.gateway.requests import json_object, number_param

NOT_FOUND_CODES = frozenset({"unknown_tag", "unknown_target"})
"""Batch-line problem codes that mean "no such model" (404 ``model_not_found``)."""
_PARAMS = {"no_messages": "messages", "invalid_body": None, "missing_model": "model",
           "unknown_tag": "model", "unknown_target": "model", "no_vision_target": "messages",
           "too_large": "messages", "max_tokens_too_large": "max_tokens", "no_target": "model"}


def validate(body: dict[str, Any], cfg, memo=None) -> tuple[JobSpec, bool, bool]:
    """``(job, stream, include_usage)``: the body checked exactly as a batch line is (one
    validator, :func:`dispatcher.batchfile.parse_job`), streaming aside."""
    want_stream = body.get("stream")
    if want_stream is not None and not isinstance(want_stream, bool):
        raise ApiError(400, "stream must be a boolean", "invalid_body", "stream")
    options = body.get("stream_options")
    if options is not None and not (isinstance(options, dict) and isinstance(
            options.get("include_usage", False), bool)):
        raise ApiError(400, "stream_options must be an object; include_usage a boolean",
                       "invalid_body", "stream_options")
    include_usage = bool(options and options.get("include_usage") is True)
    job_body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    try:
        spec = parse_job({"custom_id": "chat", "body": job_body}, cfg, memo=memo)
    except BatchInvalid as exc:
        p = exc.problems[0]
        message = "; ".join(q.message for q in exc.problems)
        if p.code in NOT_FOUND_CODES:
            raise ApiError(404, message, "model_not_found", "model") from None
        raise ApiError(400, message, p.code, _PARAMS.get(p.code)) from None
    return spec, want_stream is True, include_usage


def max_wait(request: Request, configured: float) -> float:
    """The smaller of ``X-Dispatch-Max-Wait`` (seconds) and the configured maximum."""
    raw = request.headers.get("x-dispatch-max-wait")
    if raw is None:
        return configured
    return min(number_param(raw, float, 0, math.inf, "X-Dispatch-Max-Wait", "invalid_header"),
               configured)


def dispatch_headers(target: str, attempts: int) -> dict[str, str]:
    return {"X-Dispatch-Target": target, "X-Dispatch-Attempts": str(attempts)}


async def chat_completions(request: Request) -> Response:
    gw = request.app.state.gw
    body = await json_object(request)
    spec, want_stream, include_usage = validate(body, gw.config, gw.memo)
    wait_s = max_wait(request, gw.config.settings.gateway.max_wait_s)
    if want_stream:
        return await stream.respond(gw, spec, wait_s, include_usage)
    result = await engine.run(gw, spec, wait_s)
    engine.record_usage(gw, result)
    return JSONResponse(result.outcome.body, status_code=result.outcome.status,
                        headers=dispatch_headers(result.target, result.attempts))
