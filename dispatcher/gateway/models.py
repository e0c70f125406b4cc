"""``GET /v1/models``: every tag and every target, as OpenAI model objects.

Extra fields: ``enabled`` (a tag: any of its targets usable), ``kind`` (``tag`` or
``target``), a tag's ``targets`` in preference order, a target's ``context_window``,
``max_output_tokens``, ``vision`` and ``reasoning``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from dispatcher.gateway.errors import ApiError


def model_objects(cfg) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    usable = {t.key: cfg.usable(t) for t in cfg.targets()}
    for tag, targets in cfg.routes.items():
        keys = [cfg.target(ref).key for ref in targets]
        out.append({"id": tag, "object": "model", "created": 0, "owned_by": "dispatch",
                    "kind": "tag", "enabled": any(usable.get(k, False) for k in keys),
                    "targets": keys})
    for t in cfg.targets():
        m = t.model
        out.append({"id": t.key, "object": "model", "created": 0, "owned_by": t.provider,
                    "kind": "target", "enabled": usable[t.key],
                    "context_window": m.context_window, "max_output_tokens": m.max_output_tokens,
                    "vision": m.vision, "reasoning": m.reasoning})
    return out


async def list_models(request: Request) -> JSONResponse:
    cfg = request.app.state.gw.config
    return JSONResponse({"object": "list", "data": model_objects(cfg)})


async def get_model(request: Request) -> JSONResponse:
    cfg = request.app.state.gw.config
    wanted = request.path_params["model"]
    for obj in model_objects(cfg):
        if obj["id"] == wanted:
            return JSONResponse(obj)
    raise ApiError(404, f"no tag or target {wanted!r} (see GET /v1/models)", "model_not_found",
                   "model")
