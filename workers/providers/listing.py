"""What each provider lists today (``GET /models``) and, for OpenRouter, the quota it reports.

The providers differ only in where the list lives and what "free" means:

- OpenAI shape ``{"data": [{"id": ...}]}`` (Groq, NVIDIA, Mistral, the simulator): every
  model listed is usable on the free tier.
- OpenRouter lists every model, paid ones too: free = an id ending ``:free``, or a pricing
  of 0 for prompt and completion.
- Cloudflare's OpenAI-compatible base (``.../accounts/{id}/ai/v1``) has no documented
  ``/models``; the account's model search ``.../ai/models/search`` answers in the v4
  envelope ``{"result": [{"name": "@cf/...", "task": {"name": ...}}], "result_info": ...}``,
  paged. Only text-generation models are asked for.

OpenRouter's ``GET /api/v1/key`` reports ``data.free_model_daily_requests`` ``{used, limit,
remaining}`` (the free ``:free`` requests of the UTC day, for the whole account).

Keys travel in the Authorization header only; every error text is redacted (with the key
itself scrubbed), so an upstream echoing the key cannot leak it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from dispatcher.catalog_check import CheckReport, Listing, compare, unfetched
from dispatcher.config import Config
from workers.providers.client import USER_AGENT, scrub

TIMEOUT_S = 20.0
MAX_PAGES = 20
CLOUDFLARE_PAGE = 100
CLOUDFLARE_TASK = "Text Generation"


class ListingError(Exception):
    """The list could not be fetched or read (the text is redacted)."""


def models_url(dialect: str, base_url: str, page: int = 1) -> str:
    """Where ``dialect``'s model list lives under ``base_url``.

        >>> models_url("groq", "https://api.groq.com/openai/v1")
        'https://api.groq.com/openai/v1/models'
        >>> models_url("cloudflare", "https://api.cloudflare.com/client/v4/accounts/x/ai/v1")
        'https://api.cloudflare.com/client/v4/accounts/x/ai/models/search?task=Text+Generation&per_page=100&page=1'
    """
    base = base_url.rstrip("/")
    if dialect == "cloudflare" and base.endswith("/ai/v1"):
        query = urlencode({"task": CLOUDFLARE_TASK, "per_page": CLOUDFLARE_PAGE, "page": page})
        return f"{base[: -len('/v1')]}/models/search?{query}"
    return f"{base}/models"


def _zero(value: Any) -> bool:
    try:
        return float(value) == 0.0
    except (TypeError, ValueError):
        return False


def parse_models(dialect: str, body: Any) -> tuple[Listing, bool]:
    """``(listing, more_pages)`` from one answer. Raises ListingError on an unknown shape.

        >>> parse_models("openrouter", {"data": [
        ...     {"id": "a:free"}, {"id": "b", "pricing": {"prompt": "0", "completion": "0"}},
        ...     {"id": "c", "pricing": {"prompt": "0.1", "completion": "0.2"}}]})[0].free
        frozenset({'a:free', 'b'})
    """
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        ids, free = set(), set()
        for item in body["data"]:
            mid = item.get("id") if isinstance(item, dict) else None
            if not isinstance(mid, str):
                continue
            ids.add(mid)
            if dialect != "openrouter":
                free.add(mid)
            else:
                pricing = item.get("pricing") or {}
                if mid.endswith(":free") or (
                    _zero(pricing.get("prompt")) and _zero(pricing.get("completion"))
                ):
                    free.add(mid)
        return Listing(frozenset(ids), frozenset(free)), False
    if isinstance(body, dict) and isinstance(body.get("result"), list):
        names = {item.get("name") for item in body["result"] if isinstance(item, dict)}
        ids = frozenset(n for n in names if isinstance(n, str))
        info = body.get("result_info") or {}
        try:
            more = int(info.get("page", 1)) * int(info.get("per_page", 0)) < int(
                info.get("total_count", 0))
        except (TypeError, ValueError):
            more = False
        return Listing(ids, ids), more
    raise ListingError("unexpected model list shape (neither `data` nor `result` list)")


def _get(client: httpx.Client, url: str, api_key: str | None) -> Any:
    headers = {"user-agent": USER_AGENT, "accept": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    try:
        resp = client.get(url, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise ListingError(scrub(f"{type(exc).__name__}: {exc}", api_key)) from None
    if resp.status_code != 200:
        raise ListingError(scrub(f"HTTP {resp.status_code}: {resp.text[:300]}", api_key))
    try:
        return resp.json()
    except ValueError:
        raise ListingError(scrub(f"not JSON: {resp.text[:200]}", api_key)) from None


def fetch_models(client: httpx.Client, dialect: str, base_url: str,
                 api_key: str | None) -> Listing:
    """Every model ``base_url`` lists today (all pages). Raises ListingError."""
    ids: set[str] = set()
    free: set[str] = set()
    for page in range(1, MAX_PAGES + 1):
        listing, more = parse_models(dialect, _get(client, models_url(dialect, base_url, page),
                                                   api_key))
        ids |= listing.ids
        free |= listing.free
        if not more:
            break
    return Listing(frozenset(ids), frozenset(free))


@dataclass(frozen=True)
class KeyQuota:
    """OpenRouter's own count of the day's free-model requests."""

    used: int
    limit: int
    remaining: int


def key_url(base_url: str) -> str:
    """``https://openrouter.ai/api/v1`` -> ``https://openrouter.ai/api/v1/key``."""
    return base_url.rstrip("/") + "/key"


def parse_key_quota(body: Any) -> KeyQuota | None:
    """``data.free_model_daily_requests`` of ``GET /api/v1/key``, or None when absent.

        >>> parse_key_quota({"data": {"free_model_daily_requests":
        ...     {"used": 12, "limit": 50, "remaining": 38}}})
        KeyQuota(used=12, limit=50, remaining=38)
    """
    data = body.get("data") if isinstance(body, dict) else None
    daily = data.get("free_model_daily_requests") if isinstance(data, dict) else None
    if not isinstance(daily, dict):
        return None
    try:
        return KeyQuota(int(daily["used"]), int(daily["limit"]), int(daily["remaining"]))
    except (KeyError, TypeError, ValueError):
        return None


def fetch_key_quota(client: httpx.Client, base_url: str, api_key: str | None) -> KeyQuota | None:
    """OpenRouter's reported free daily requests. Raises ListingError."""
    return parse_key_quota(_get(client, key_url(base_url), api_key))


def routed_ids(cfg: Config) -> dict[str, set[str]]:
    """provider -> model ids some tag routes to."""
    out: dict[str, set[str]] = {}
    for targets in cfg.routes.values():
        for ref in targets:
            provider, _, model = ref.partition("/")
            out.setdefault(provider, set()).add(model)
    return out


def check(cfg: Config, providers: dict[str, tuple[str | None, str | None]],
          simulated: bool = False) -> CheckReport:
    """Compare ``cfg`` with what each of ``providers`` ({name: (base_url, key)}) lists."""
    routed = routed_ids(cfg)

    def one(name: str):
        pc = cfg.providers[name]
        configured = [m.id for m in pc.models]
        base_url, key = providers[name]
        if not base_url:
            return unfetched(name, "no base URL (simulator not running?)", len(configured))
        try:
            with httpx.Client() as client:
                listing = fetch_models(client, pc.dialect, base_url, key)
        except ListingError as exc:
            return unfetched(name, str(exc), len(configured))
        return compare(name, configured, routed.get(name, set()), listing)

    names = [n for n in cfg.providers if n in providers]
    if not names:
        return CheckReport([], simulated)
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        return CheckReport(list(pool.map(one, names)), simulated)
