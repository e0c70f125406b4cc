"""Pure parsing of rate-limit headers and retry hints (no I/O, no clock unless given).

Providers report limits in different shapes (providers.md, "Rate-limit headers"); these
functions turn them into :class:`Observation` values and a retry delay in seconds.
Header names are case-insensitive: pass ``httpx.Headers`` or a plain dict.

Upstreams send garbage too (``Retry-After: inf``, ``nan``, ``-3``, ``1e400``, a date in
the year 9999, ``x-ratelimit-remaining-tokens: lots``). A value that is not a finite,
non-negative number is IGNORED (as if the header were absent), never a crash; a retry
delay is capped at :data:`MAX_RETRY_AFTER_S` so one odd answer cannot park a target for
days (a daily limit is handled apart, by closing the target until its reset).

    >>> parse_go_duration("2m59.56s")
    179.56
    >>> parse_retry_after({"Retry-After": "7"})
    7.0
    >>> [o.per for o in groq_observations({"x-ratelimit-remaining-tokens": "5990"})]
    ['minute']
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Literal

from workers.providers.outcomes import Observation

Headers = Mapping[str, str]

MAX_RETRY_AFTER_S = 3600.0
"""Longest wait taken from one 429's hint (Retry-After, "try again in", a reset)."""
MAX_RESET_S = 32 * 86400.0
"""Longest reset taken from a rate-limit header (a month window); longer ones are cut."""
MAX_COUNT = 10**15
"""Largest remaining/limit count taken from a header; beyond: garbage."""

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


def _seconds(value: float, most: float) -> float | None:
    """A usable delay: finite, not negative, at most ``most``; else None (garbage)."""
    if not math.isfinite(value) or value < 0:
        return None
    return min(value, most)


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration (``"1h2m3s"``, ``"7.66s"``, ``"450ms"``); a bare number
    counts as seconds. Raises ValueError on anything else, including a non-finite or
    negative number."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pos, value = 0, 0.0
        for m in _GO_PART.finditer(text):
            if m.start() != pos:
                break
            value += float(m.group(1)) * _GO_UNITS[m.group(2)]
            pos = m.end()
        if pos == 0 or pos != len(text):
            raise ValueError(f"not a Go duration: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a usable duration: {text!r}")
    return round(value, 9)


def _duration(text: str | None, most: float = MAX_RESET_S) -> float | None:
    if text is None:
        return None
    try:
        return _seconds(parse_go_duration(text), most)
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    """A count from a header: a non-negative integer up to :data:`MAX_COUNT`, else None."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if 0 <= value <= MAX_COUNT else None  # False for nan and inf too


def parse_retry_after(headers: Headers | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, else ``Retry-After`` (seconds or an
    HTTP-date, measured against ``now``, default the wall clock). None when absent or
    garbage; at most :data:`MAX_RETRY_AFTER_S`; a date already past gives 0."""
    ms = header(headers, "retry-after-ms")
    if ms is not None:
        try:
            value = _seconds(float(ms) / 1000.0, MAX_RETRY_AFTER_S)
        except ValueError:
            value = None
        if value is not None:
            return value
    value_text = header(headers, "retry-after")
    if not value_text:
        return None
    try:
        return _seconds(float(value_text), MAX_RETRY_AFTER_S)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value_text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
    return _seconds(max(0.0, when - (time.time() if now is None else now)), MAX_RETRY_AFTER_S)


def retry_hint(message: str | None) -> float | None:
    """Groq's "Please try again in 5.289s" (or ``1m26.4s``, ``450ms``) as seconds, at
    most :data:`MAX_RETRY_AFTER_S`."""
    m = _TRY_AGAIN.search(message or "")
    return _duration(m.group(1), MAX_RETRY_AFTER_S) if m else None


def capped_retry(seconds: float | None) -> float | None:
    """A retry delay from any source, made safe: None for garbage, else capped."""
    return None if seconds is None else _seconds(seconds, MAX_RETRY_AFTER_S)


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
        delay = raw / 1000.0 - now
    elif raw > 10**9:  # epoch seconds
        delay = raw - now
    else:
        delay = float(raw)  # already a delay
    return _seconds(max(0.0, delay), MAX_RESET_S)


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
