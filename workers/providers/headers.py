"""Pure parsing of rate-limit headers and retry hints (no I/O, no clock unless given).

Providers report limits in different shapes (providers.md, "Rate-limit headers"); these
functions turn them into :class:`Observation` values and a retry delay in seconds.
Header names are case-insensitive: pass ``httpx.Headers`` or a plain dict.

    >>> parse_go_duration("2m59.56s")
    179.56
    >>> parse_retry_after({"Retry-After": "7"})
    7.0
    >>> [o.per for o in groq_observations({"x-ratelimit-remaining-tokens": "5990"})]
    ['minute']
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Literal

from workers.providers.outcomes import Observation

Headers = Mapping[str, str]

_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_TRY_AGAIN = re.compile(r"try again in\s+((?:(?:\d+(?:\.\d*)?|\.\d+)(?:ms|us|µs|ns|h|m|s))+)", re.I)


def header(headers: Headers | None, name: str) -> str | None:
    """Case-insensitive lookup that works for httpx.Headers and plain dicts alike."""
    if not headers:
        return None
    value = headers.get(name)
    if value is None and not hasattr(headers, "multi_items"):  # plain dict: scan
        lname = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lname), None)
    return None if value is None else str(value).strip()


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration (``"1h2m3s"``, ``"7.66s"``, ``"450ms"``); a bare number
    counts as seconds. Raises ValueError on anything else."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _GO_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(text):
        raise ValueError(f"not a Go duration: {text!r}")
    return round(total, 9)


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_go_duration(text)
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


def parse_retry_after(headers: Headers | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, else ``Retry-After`` (seconds or an
    HTTP-date, measured against ``now``, default the wall clock). Never negative."""
    ms = header(headers, "retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = header(headers, "retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def retry_hint(message: str | None) -> float | None:
    """Groq's "Please try again in 5.289s" (or ``1m26.4s``, ``450ms``) as seconds."""
    m = _TRY_AGAIN.search(message or "")
    return _duration(m.group(1)) if m else None


def groq_observations(headers: Headers | None, now: float | None = None) -> list[Observation]:
    """Groq: ``*-requests`` are requests per DAY, ``*-tokens`` tokens per MINUTE, per model;
    resets are Go durations."""
    out = []
    for kind, unit, per in (("requests", "requests", "day"), ("tokens", "tokens", "minute")):
        remaining = _int(header(headers, f"x-ratelimit-remaining-{kind}"))
        if remaining is None:
            continue
        out.append(
            Observation(
                unit=unit,  # type: ignore[arg-type]
                per=per,  # type: ignore[arg-type]
                limit=_int(header(headers, f"x-ratelimit-limit-{kind}")),
                remaining=remaining,
                reset_s=_duration(header(headers, f"x-ratelimit-reset-{kind}")),
                scope="model",
            )
        )
    return out


def _reset_from_epoch(value: str | None, now: float) -> float | None:
    """OpenRouter's reset is documented as epoch ms (unconfirmed): accept epoch ms, epoch
    seconds or a plain delay in seconds, told apart by magnitude."""
    raw = _int(value)
    if raw is None:
        return None
    if raw > 10**11:  # epoch milliseconds
        return max(0.0, raw / 1000.0 - now)
    if raw > 10**9:  # epoch seconds
        return max(0.0, raw - now)
    return float(raw)  # already a delay


def openrouter_observations(
    headers: Headers | None, now: float | None = None
) -> list[Observation]:
    """OpenRouter (on its 429s): one request counter for the whole account. The window
    is not named, so a reset more than two minutes away is taken as the daily one."""
    remaining = _int(header(headers, "x-ratelimit-remaining"))
    if remaining is None:
        return []
    now = time.time() if now is None else now
    reset = _reset_from_epoch(header(headers, "x-ratelimit-reset"), now)
    per: Literal["minute", "day"] = "day" if reset is not None and reset > 120 else "minute"
    limit = _int(header(headers, "x-ratelimit-limit"))
    return [Observation("requests", per, limit, remaining, reset, "provider")]


def mistral_observations(headers: Headers | None, now: float | None = None) -> list[Observation]:
    """Mistral (observed, undocumented): ``ratelimitbysize-*`` are tokens per minute;
    ``x-ratelimitbysize-remaining-minute`` / ``-month`` the per-window remainders."""
    out = []
    remaining = _int(header(headers, "ratelimitbysize-remaining"))
    if remaining is not None:
        out.append(
            Observation(
                "tokens",
                "minute",
                _int(header(headers, "ratelimitbysize-limit")),
                remaining,
                _duration(header(headers, "ratelimitbysize-reset")),
                "provider",
            )
        )
    for per in ("minute", "month"):
        if per == "minute" and out:
            continue  # the same window, already reported with its limit and reset
        rem = _int(header(headers, f"x-ratelimitbysize-remaining-{per}"))
        if rem is not None:
            limit = _int(header(headers, f"x-ratelimitbysize-limit-{per}"))
            out.append(Observation("tokens", per, limit, rem, None, "provider"))  # type: ignore[arg-type]
    return out


Observer = Callable[..., list[Observation]]

OBSERVERS: dict[str, Observer] = {
    "groq": groq_observations,
    "openrouter": openrouter_observations,
    "mistral": mistral_observations,
}
"""Header format name -> parser; a dialect without an entry reports nothing."""


def observations(
    fmt: str | None, headers: Headers | None, now: float | None = None
) -> list[Observation]:
    """Observations for the header format ``fmt`` (``None``: the provider sends none)."""
    parser = OBSERVERS.get(fmt or "")
    return parser(headers, now) if parser else []
