"""Pure quota arithmetic (no Redis): windows, calendar edges (pitfall 9), waits, labels."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

import workers.quota.limits as limits_mod
from dispatcher.config.models import Limit, Per, Unit
from workers.quota.limits import (
    SCOPE_MODEL,
    SCOPE_PROVIDER,
    calendar_period,
    key_prefix,
    limit_label,
    limit_specs,
    limit_text,
    member,
    member_cost,
    next_reset,
    rolling_ttl_ms,
    rolling_used,
    rolling_wait_us,
    window_us,
)


def utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


def local(tz: str, *args: int) -> int:
    return int(datetime(*args, tzinfo=ZoneInfo(tz)).timestamp())


def test_doctests() -> None:
    assert doctest.testmod(limits_mod).failed == 0


def test_window_margin_is_capped_at_one_percent() -> None:
    assert window_us(Per.second, 20) == 1_010_000  # 1% of 1 s < 20 ms
    assert window_us(Per.minute, 20) == 60_020_000
    assert window_us(Per.hour, 20) == 3_600_020_000
    assert window_us(Per.minute, 0) == 60_000_000
    assert window_us(Per.second, 0.5) == 1_000_500
    assert window_us(Per.minute, 20, 0.2) == 60_140_000  # 20 ms + 0.2 % of 60 s
    assert window_us(Per.second, 20, 0.2) == 1_010_000   # still capped at 1 %


def test_rolling_ttl_outlives_window() -> None:
    for per in (Per.second, Per.minute, Per.hour):
        win = window_us(per, 20)
        assert rolling_ttl_ms(win) * 1000 >= 2 * win + 1_000_000


# ---- pitfall 9: calendar edges -------------------------------------------------------

def test_day_exactly_at_midnight_utc_belongs_to_the_new_day() -> None:
    midnight = utc(2026, 11, 24)
    p = calendar_period(Per.day, "UTC", midnight)
    assert (p.key, p.start, p.end) == ("2026-11-24", midnight, utc(2026, 11, 25))
    before = calendar_period(Per.day, "UTC", midnight - 0.000001)
    assert before.key == "2026-11-23" and before.end == midnight
    assert not before.contains(midnight) and p.contains(midnight)


def test_month_end_and_year_end() -> None:
    p = calendar_period(Per.month, "UTC", utc(2026, 1, 31, 23, 59, 59))
    assert (p.key, p.start, p.end) == ("2026-01", utc(2026, 1, 1), utc(2026, 2, 1))
    assert calendar_period(Per.month, "UTC", utc(2026, 2, 1)).key == "2026-02"
    dec = calendar_period(Per.month, "UTC", utc(2026, 12, 31, 23, 59, 59))
    assert (dec.key, dec.end) == ("2026-12", utc(2027, 1, 1))
    day = calendar_period(Per.day, "UTC", utc(2026, 12, 31, 12))
    assert (day.key, day.end) == ("2026-12-31", utc(2027, 1, 1))


def test_feb_29() -> None:
    p = calendar_period(Per.day, "UTC", utc(2028, 2, 29, 13))
    assert (p.key, p.start, p.end) == ("2028-02-29", utc(2028, 2, 29), utc(2028, 3, 1))
    feb = calendar_period(Per.month, "UTC", utc(2028, 2, 29, 23, 59, 59))
    assert (feb.key, feb.end - feb.start) == ("2028-02", 29 * 86400)
    assert calendar_period(Per.month, "UTC", utc(2026, 2, 15)).end == utc(2026, 3, 1)


def test_non_utc_zone_across_dst() -> None:
    tz = "America/New_York"
    spring = calendar_period(Per.day, tz, local(tz, 2026, 3, 8, 12))  # clocks 02:00 -> 03:00
    assert spring.key == "2026-03-08"
    assert spring.end - spring.start == 23 * 3600
    assert spring.start == utc(2026, 3, 8, 5)  # midnight EST = 05:00 UTC
    autumn = calendar_period(Per.day, tz, local(tz, 2026, 11, 1, 12))  # 02:00 -> 01:00
    assert autumn.end - autumn.start == 25 * 3600
    assert autumn.end == utc(2026, 11, 2, 5)
    # The UTC date is not the local date: 03:00 UTC on the 2nd is the 1st in New York.
    assert calendar_period(Per.day, tz, utc(2026, 11, 2, 3)).key == "2026-11-01"
    march = calendar_period(Per.month, tz, local(tz, 2026, 3, 20))
    assert march.end - march.start == 31 * 86400 - 3600
    berlin = calendar_period(Per.day, "Europe/Berlin", utc(2026, 10, 24, 22, 30))
    assert berlin.key == "2026-10-25" and berlin.end - berlin.start == 25 * 3600


def test_day_whose_midnight_does_not_exist() -> None:
    # Santiago springs forward at 00:00 -> 01:00: the day starts at 01:00 local.
    tz = "America/Santiago"
    p = calendar_period(Per.day, tz, local(tz, 2026, 9, 6, 12))
    assert p.key == "2026-09-06"
    assert datetime.fromtimestamp(p.start, ZoneInfo(tz)).hour == 1
    assert p.end - p.start == 23 * 3600
    prev = calendar_period(Per.day, tz, p.start - 1)
    assert prev.key == "2026-09-05" and prev.end == p.start


def test_periods_tile_time_without_gap_or_overlap() -> None:
    for tz in ("UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"):
        for per in (Per.day, Per.month):
            t = utc(2026, 1, 1)
            p = calendar_period(per, tz, t)
            for _ in range(40):
                nxt = calendar_period(per, tz, p.end)
                assert nxt.start == p.end and nxt.key > p.key
                assert calendar_period(per, tz, p.end - 1) == p
                p = nxt


def test_calendar_period_refuses_rolling() -> None:
    with pytest.raises(ValueError):
        calendar_period(Per.minute, "UTC", 0)


def test_next_reset() -> None:
    t = utc(2026, 11, 23, 15)
    assert next_reset(Per.day, "UTC", t) == utc(2026, 11, 24)
    assert next_reset(Per.month, "UTC", t) == utc(2026, 12, 1)
    assert next_reset(Per.minute, "UTC", t, 20) == t + 60.02


# ---- waits ------------------------------------------------------------------------

def test_rolling_wait_walks_oldest_first() -> None:
    win = 60_000_000
    now = 100_000_000
    entries = [(50_000_000, 1000), (60_000_000, 2000), (90_000_000, 3000)]
    assert rolling_used(entries, now, win) == 6000
    assert rolling_wait_us(entries, 0, 6000, now, win) == 0
    # 1500 more needs 1500 freed: the first entry (1000) is not enough, the second is.
    assert rolling_wait_us(entries, 1500, 6000, now, win) == 60_000_000 + win - now
    assert rolling_wait_us(entries, 500, 6000, now, win) == 50_000_000 + win - now
    assert rolling_wait_us(entries, 6000, 6000, now, win) == 90_000_000 + win - now
    # Entries at or before now - window no longer count (half-open window).
    assert rolling_used([(now - win, 5000)], now, win) == 0
    assert rolling_used([(now - win + 1, 5000)], now, win) == 5000
    with pytest.raises(ValueError):
        rolling_wait_us(entries, 6001, 6000, now, win)


def test_members_and_labels() -> None:
    assert member(1500, "abc:def") == "1500:abc:def"
    assert member_cost("1500:abc:def") == 1500 and member_cost(b"7:x") == 7
    lim = Limit(unit=Unit.tokens, limit=6000, per=Per.minute)
    assert limit_text(lim) == "6000 tokens/minute"
    assert limit_label("groq", "llama-3.1-8b-instant", lim) == (
        "groq/llama-3.1-8b-instant: 6000 tokens/minute"
    )
    day = Limit(unit=Unit.requests, limit=50, per=Per.day)
    assert limit_label("openrouter", None, day) == "openrouter: 50 requests/day"


def test_key_prefix_and_specs() -> None:
    assert key_prefix("dispatch", False, "groq") == "dispatch:q:live:{groq}:"
    assert key_prefix("dispatch", True, "groq") == "dispatch:q:sim:{groq}:"
    with pytest.raises(ValueError):
        key_prefix("a{b}", False, "groq")
    rpm = Limit(unit=Unit.requests, limit=30, per=Per.minute)
    tighter = Limit(unit=Unit.requests, limit=20, per=Per.minute)
    specs = limit_specs("P:", "groq", "m/x", [
        (SCOPE_PROVIDER, rpm), (SCOPE_MODEL, rpm), (SCOPE_MODEL, tighter),
    ])
    assert [(s.base, s.limit.limit) for s in specs] == [
        ("P:p:requests:minute", 30), ("P:m:m/x:requests:minute", 20),
    ]
    assert specs[0].model_id is None and specs[0].label == "groq: 30 requests/minute"
    assert specs[0].cap == 30
    neurons = Limit(unit=Unit.neurons, limit=10_000, per=Per.day)
    (n,) = limit_specs("P:", "cloudflare", "m", [(SCOPE_PROVIDER, neurons)])
    assert n.cap == 10_000_000  # charged in milli-neurons, like Cost.milli_neurons
