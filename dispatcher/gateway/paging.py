"""OpenAI cursor pages (``after``, ``limit``): newest first, ``has_more`` always present
(the SDKs' auto-pager loops forever without it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from dispatcher.gateway.requests import number_param


def limit_param(request: Request, default: int, maximum: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    return int(number_param(raw, int, 1, maximum, "limit", "invalid_limit"))


def page(request: Request, r, index: str, load: Callable[[str], dict[str, Any] | None],
         default_limit: int = 20, max_limit: int = 100) -> dict[str, Any]:
    """One page of the sorted set ``index`` (newest first) after the ``after`` id."""
    limit = limit_param(request, default_limit, max_limit)
    after = request.query_params.get("after")
    start = 0
    if after:
        rank = r.zrevrank(index, after)
        if rank is None:  # expired or deleted (or never was): nothing comes after it
            return {"object": "list", "data": [], "first_id": None, "last_id": None,
                    "has_more": False}
        start = rank + 1
    data: list[dict[str, Any]] = []
    cursor = start
    while len(data) <= limit:
        ids = r.zrevrange(index, cursor, cursor + limit)
        if not ids:
            break
        cursor += len(ids)
        for item_id in ids:
            obj = load(item_id)
            if obj is None:  # expired, deleted or filtered out
                continue
            data.append(obj)
            if len(data) > limit:
                break
    more = len(data) > limit
    data = data[:limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}
