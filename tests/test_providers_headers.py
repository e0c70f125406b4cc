"""Rate-limit header parsing, with headers shaped as providers.md documents them."""

from __future__ import annotations

from email.utils import formatdate

import httpx
import pytest

from workers.providers.headers import (
    groq_observations,
    header,
    mistral_observations,
    observations,
    openrouter_observations,
    parse_go_duration,
    parse_retry_after,
    retry_hint,
)
from workers.providers.outcomes import Observation


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2m59.56s", 179.56),
        ("7.66s", 7.66),
        ("1h2m3s", 3723.0),
        ("450ms", 0.45),
        ("1m26.4s", 86.4),
        ("0s", 0.0),
        ("12", 12.0),
        ("1.5", 1.5),
        ("250us", 0.00025),
    ],
)
def test_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5x", "1m junk", "s", "m5"])
def test_go_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_header_lookup_is_case_insensitive_for_dicts_and_httpx() -> None:
    assert header({"Retry-After": "3"}, "retry-after") == "3"
    assert header(httpx.Headers({"Retry-After": "3"}), "RETRY-AFTER") == "3"
    assert header({}, "retry-after") is None
    assert header(None, "retry-after") is None


def test_retry_after_seconds_ms_and_date() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"Retry-After": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    now = 1_800_000_000.0
    date = formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now) == pytest.approx(30.0)
    assert parse_retry_after({"Retry-After": formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "-4"}) is None  # garbage: ignored


def test_retry_hint_from_groq_message() -> None:
    msg = (
        "Rate limit reached for model `llama-3.1-8b-instant` in organization `org_x` on tokens "
        "per minute (TPM): Limit 6000, Used 5800, Requested 500. Please try again in 5.289s. "
        "Visit https://console.groq.com/docs/rate-limits for more information."
    )
    assert retry_hint(msg) == pytest.approx(5.289)
    assert retry_hint("Please try again in 1m26.4s.") == pytest.approx(86.4)
    assert retry_hint("Please try again in 450ms") == pytest.approx(0.45)
    assert retry_hint("Rate limit exceeded") is None
    assert retry_hint(None) is None


def test_groq_observations() -> None:
    h = httpx.Headers(
        {
            "x-ratelimit-limit-requests": "14400",
            "x-ratelimit-remaining-requests": "14370",
            "x-ratelimit-reset-requests": "2m59.56s",
            "x-ratelimit-limit-tokens": "6000",
            "x-ratelimit-remaining-tokens": "5997",
            "x-ratelimit-reset-tokens": "7.66s",
        }
    )
    assert groq_observations(h) == [
        Observation("requests", "day", 14400, 14370, pytest.approx(179.56), "model"),
        Observation("tokens", "minute", 6000, 5997, pytest.approx(7.66), "model"),
    ]
    assert groq_observations({}) == []
    # partial or odd headers degrade gracefully
    odd = {"X-RateLimit-Remaining-Tokens": "10", "x-ratelimit-reset-tokens": "?"}
    (obs,) = groq_observations(odd)
    assert (obs.limit, obs.remaining, obs.reset_s) == (None, 10, None)


def test_openrouter_observations_epoch_ms() -> None:
    now = 1_800_000_000.0
    minute = {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0",
              "X-RateLimit-Reset": str(int((now + 42) * 1000))}
    (obs,) = openrouter_observations(minute, now=now)
    assert obs == Observation("requests", "minute", 20, 0, pytest.approx(42.0), "provider")
    day = {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0",
           "X-RateLimit-Reset": str(int((now + 5 * 3600) * 1000))}
    (obs,) = openrouter_observations(day, now=now)
    assert (obs.per, obs.limit, obs.reset_s) == ("day", 50, pytest.approx(18000.0))
    # epoch seconds are accepted too (the ms unit is unconfirmed)
    (obs,) = openrouter_observations({"x-ratelimit-remaining": "3",
                                      "x-ratelimit-reset": str(int(now + 10))}, now=now)
    assert obs.reset_s == pytest.approx(10.0)
    assert openrouter_observations({}) == []


def test_mistral_observations() -> None:
    h = {
        "ratelimitbysize-limit": "500000",
        "ratelimitbysize-remaining": "499000",
        "ratelimitbysize-reset": "17",
        "x-ratelimitbysize-remaining-minute": "499000",
        "x-ratelimitbysize-remaining-month": "999000000",
    }
    assert mistral_observations(h) == [
        Observation("tokens", "minute", 500000, 499000, 17.0, "provider"),
        Observation("tokens", "month", None, 999000000, None, "provider"),
    ]
    only_minute = {"x-ratelimitbysize-remaining-minute": "12",
                   "x-ratelimitbysize-limit-minute": "20"}
    assert mistral_observations(only_minute) == [
        Observation("tokens", "minute", 20, 12, None, "provider")
    ]


def test_observations_dispatch() -> None:
    h = {"x-ratelimit-remaining-tokens": "5"}
    assert [o.unit for o in observations("groq", h)] == ["tokens"]
    assert observations(None, h) == []
    assert observations("nvidia", h) == []


# -- garbage from an upstream: ignored or capped, never a crash (issue #11 item 3) -------


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "NaN", "-5", "1e400", "-0.5",
                                   "Infinity", "", "  ", "5 seconds", "0x10",
                                   "Mon, 01 Jan 99999 00:00:00 GMT", "Sun, 31 Dec 9999 x"])
def test_garbage_retry_after_is_ignored(value: str) -> None:
    assert parse_retry_after({"Retry-After": value}) is None
    assert parse_retry_after({"retry-after-ms": value}) is None


def test_retry_after_is_capped() -> None:
    from workers.providers.headers import MAX_RETRY_AFTER_S

    now = 1_800_000_000.0
    assert parse_retry_after({"Retry-After": "1e300"}) == MAX_RETRY_AFTER_S
    assert parse_retry_after({"retry-after-ms": "9" * 30}) == MAX_RETRY_AFTER_S
    far = formatdate(now + 10 * 86400, usegmt=True)
    assert parse_retry_after({"Retry-After": far}, now=now) == MAX_RETRY_AFTER_S
    assert retry_hint("Please try again in 99999h") == MAX_RETRY_AFTER_S
    # garbage in the ms header falls back to the seconds one
    assert parse_retry_after({"retry-after-ms": "nan", "retry-after": "3"}) == 3.0


@pytest.mark.parametrize("value", ["inf", "nan", "1e400", "-1", "9" * 400, "lots"])
def test_garbage_rate_limit_headers_are_ignored(value: str) -> None:
    groq = {"x-ratelimit-remaining-tokens": value, "x-ratelimit-limit-tokens": value,
            "x-ratelimit-reset-tokens": value}
    assert groq_observations(groq) == []
    assert openrouter_observations({"x-ratelimit-remaining": value}) == []
    assert mistral_observations({"ratelimitbysize-remaining": value}) == []
    # a good remaining with a garbage limit and reset keeps the good part only
    [obs] = groq_observations({**groq, "x-ratelimit-remaining-tokens": "10"})
    assert (obs.remaining, obs.limit, obs.reset_s) == (10, None, None)


@pytest.mark.parametrize("text", ["inf", "nan", "-3s", "1e400", "9" * 400 + "h", "-1"])
def test_go_duration_refuses_non_finite_and_negative(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)
