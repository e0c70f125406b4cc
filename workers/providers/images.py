"""Inline ``http(s)`` images as ``data:`` URIs, for models that take nothing else.

Workers AI's Llama 4 Scout accepts images only as data URIs ("HTTP URL will not be
accepted"). The image is fetched here, once, before quota is taken, with a size cap: a
larger (or unreachable, or non-image) one raises :class:`ImageInlineError` whose text says
why, and the caller routes the job to another target with that reason.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import httpx

from workers.providers.client import USER_AGENT

DEFAULT_MAX_BYTES = 4_000_000
TIMEOUT_S = 15.0


class ImageInlineError(ValueError):
    """An http(s) image that could not be inlined (too large, unreachable, not an image)."""


def _fetch(url: str, max_bytes: int) -> str:
    try:
        with httpx.stream("GET", url, timeout=TIMEOUT_S, follow_redirects=True,
                          headers={"user-agent": USER_AGENT}) as resp:
            if resp.status_code != 200:
                raise ImageInlineError(f"image {url[:200]}: HTTP {resp.status_code}")
            ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
            if not ctype.startswith("image/"):
                raise ImageInlineError(f"image {url[:200]}: content-type {ctype or 'missing'}"
                                       " is not an image")
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageInlineError(f"image {url[:200]}: {int(declared):,} bytes exceeds "
                                       f"the {max_bytes:,}-byte inline cap")
            data = bytearray()
            for chunk in resp.iter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise ImageInlineError(f"image {url[:200]}: more than {max_bytes:,} "
                                           "bytes exceeds the inline cap")
    except httpx.HTTPError as exc:
        raise ImageInlineError(f"image {url[:200]}: {type(exc).__name__}: {exc}") from None
    return f"data:{ctype};base64,{base64.b64encode(bytes(data)).decode()}"


def inline_images(body: dict[str, Any], max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """``body`` with every ``image_url`` part's http(s) URL replaced by a data URI (a copy
    when anything changes; the same object otherwise). Raises ImageInlineError."""
    out = body
    for i, msg in enumerate(body.get("messages") or []):
        parts = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(parts, list):
            continue
        for j, part in enumerate(parts):
            image = part.get("image_url") if isinstance(part, dict) else None
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
                continue
            if out is body:
                out = copy.deepcopy(body)
            target = out["messages"][i]["content"][j]
            if isinstance(target["image_url"], dict):
                target["image_url"]["url"] = _fetch(url, max_bytes)
            else:
                target["image_url"] = {"url": _fetch(url, max_bytes)}
    return out
