"""Reading request bodies: JSON objects only, with the reason when it is not one."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from dispatcher.gateway.errors import ApiError


async def json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_json")
    return body


def number_param(raw: str, kind: type, low: float, high: float, name: str,
                 code: str) -> float:
    """``raw`` as a ``kind`` (int or float) in ``[low, high]``, or a 400 naming ``name``."""
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value != value or not low <= value <= high:
        raise ApiError(400, f"{name} must be a number from {low:g} to {high:g} (got {raw!r})",
                       code, name)
    return value
