"""The forecast's pure rules: limits, resets in the provider's zone, fallback, backlog, order.

No Redis: a World is built from a configuration (the same rules the workers enforce) and
the simulation is checked against what the limits allow.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.batchfile import parse_batch
from dispatcher.config import load_config
from dispatcher.forecast import NEW, SimJob, as_json, simulate, summary
from dispatcher.forecast_state import empty_world, planned_jobs, rules
from tests.cluster import job_line, model, provider, write_config
from workers.quota.costs import Cost

NOON = datetime(2026, 11, 29, 12, 0, tzinfo=UTC).timestamp()


def _cfg(tmp_path, *, a_limits, b_limits=None, tz="UTC", concurrency=4, latency=1.0,
         reserve=None):
    a = provider(model("m", limits=a_limits), timezone=tz, concurrency=concurrency)
    providers = {"a": a}
    route = ["a/m"]
    if b_limits is not None:
        providers["b"] = provider(model("m", limits=b_limits), concurrency=concurrency)
        route.append("b/m")
    d = write_config(tmp_path / "cfg", providers, {"fast": route},
                     settings={"forecast": {"latency_s": latency}})
    return load_config(d, simulate=True)


def _jobs(cfg, n, priority="normal", seq=1):
    specs = parse_batch([job_line(f"j{i}", "fast") for i in range(n)], cfg)
    return planned_jobs(specs, cfg, priority, seq)


def _plan(cfg, n, now=NOON, **kw):
    return simulate(empty_world(cfg, now), _jobs(cfg, n, **kw))


def test_rolling_limit_paces_the_batch(tmp_path):
    cfg = _cfg(tmp_path, a_limits=[{"unit": "requests", "limit": 10, "per": "minute"}])
    f = _plan(cfg, 25)
    # 10 now, 10 a window later, 5 two windows later (window = 60 s + the timing margin).
    win = rules(cfg)[0]["a:m:m:requests:minute"].window_s
    assert win > 60
    assert f.finish_at == pytest.approx(NOON + 2 * win + 1.0)
    assert f.targets == {"a/m": 25}
    assert f.binding[0][0] == "a/m: 10 requests/minute"


def test_a_spent_day_limit_falls_back_then_waits_for_the_reset(tmp_path):
    cfg = _cfg(tmp_path, a_limits=[{"unit": "requests", "limit": 30, "per": "day"}],
               b_limits=[{"unit": "requests", "limit": 20, "per": "day"}])
    f = _plan(cfg, 60)
    assert f.targets == {"a/m": 40, "b/m": 20}  # 30 + 10 after a's reset
    midnight = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
    assert f.done_by(midnight) == 50
    assert f.resets and f.resets[0].at == midnight and f.resets[0].jobs == 10
    assert f.finish_at == pytest.approx(midnight + 1.0)
    text = summary(f)
    assert "50 jobs by" in text and "reset at 00:00 UTC" in text and "done about" in text


def test_a_fixed_offset_zone_moves_the_reset(tmp_path):
    cfg = _cfg(tmp_path, a_limits=[{"unit": "requests", "limit": 5, "per": "day"}],
               tz="+05:47")
    f = _plan(cfg, 8)
    # Midnight at +05:47 is 18:13 UTC.
    assert f.resets[0].at == datetime(2026, 11, 29, 18, 13, tzinfo=UTC).timestamp()
    assert "reset at 00:00 +05:47" in summary(f)


def test_concurrency_and_latency_bound_an_unlimited_target(tmp_path):
    cfg = _cfg(tmp_path, a_limits=[], concurrency=3, latency=2.0)
    f = _plan(cfg, 9)
    assert f.finish_at == pytest.approx(NOON + 6.0)  # 3 waves of 3, 2 s each
    assert f.binding[0][0] == "concurrency"


def test_a_job_over_every_limit_is_never_served(tmp_path):
    cfg = _cfg(tmp_path, a_limits=[{"unit": "tokens", "limit": 100, "per": "minute"}])
    jobs = [SimJob(float(i), ("a/m",), (Cost(1, 101),)) for i in range(3)]
    f = simulate(empty_world(cfg, NOON), jobs)
    assert f.never == 3 and f.finish_at is None
    assert "none of the 3 jobs" in summary(f)


def test_used_quota_and_reserve_shrink_what_batch_jobs_get(tmp_path):
    limits = [{"unit": "requests", "limit": 100, "per": "day",
               "reserve": {"share": 0.2, "for": "interactive"}}]
    cfg = _cfg(tmp_path, a_limits=limits)
    world = empty_world(cfg, NOON)
    assert world.limits["a:m:m:requests:day"].cap == 80
    world.calendar_used["a:m:m:requests:day"] = 70
    f = simulate(world, _jobs(cfg, 15))
    assert f.done_by(datetime(2026, 11, 30, tzinfo=UTC).timestamp() - 1) == 10


def test_backlog_ahead_delays_the_batch_and_priority_jumps_it(tmp_path):
    cfg = _cfg(tmp_path, a_limits=[{"unit": "requests", "limit": 10, "per": "minute"}])
    backlog = [SimJob(j.score, j.targets, j.costs, "old") for j in _jobs(cfg, 30, seq=1)]
    alone = simulate(empty_world(cfg, NOON), _jobs(cfg, 10, seq=2))
    fair = simulate(empty_world(cfg, NOON), backlog + _jobs(cfg, 10, seq=2))
    behind = simulate(empty_world(cfg, NOON), backlog + _jobs(cfg, 10, "low", seq=2))
    ahead = simulate(empty_world(cfg, NOON), backlog + _jobs(cfg, 10, "high", seq=2))
    assert alone.finish_at <= ahead.finish_at < fair.finish_at < behind.finish_at
    assert behind.ahead == 30 and fair.ahead == 10 and ahead.ahead == 1  # 10:1 shares
    # Same priority: the k-th jobs of both batches interleave, so the small one ends first.
    assert fair.batch_finish[NEW] < fair.batch_finish["old"]
    assert behind.batch_finish["old"] < behind.batch_finish[NEW]


def test_json_document(tmp_path):
    cfg = _cfg(tmp_path, a_limits=[{"unit": "requests", "limit": 5, "per": "day"}])
    f = _plan(cfg, 8)
    doc = as_json(f, deadline=NOON + 3600)
    assert doc["finish_at"] == f.finish_at and doc["targets"] == {"a/m": 8}
    assert doc["by_deadline"] == 5 and doc["meets_deadline"] is False
    assert doc["binding"][0]["limit"] == "a/m: 5 requests/day"
    assert doc["resets"][0]["jobs_after"] == 3


LIMITS = st.lists(
    st.tuples(st.sampled_from(["requests", "tokens"]), st.integers(1, 400),
              st.sampled_from(["second", "minute", "hour", "day"])),
    min_size=1, max_size=3,
)


def _limits(spec):
    out = {}
    for unit, n, per in spec:
        n = max(n, 200) if unit == "tokens" else n  # a job must fit a token limit
        out[(unit, per)] = {"unit": unit, "limit": n, "per": per}
    return list(out.values())


@settings(max_examples=25, deadline=None)
@given(spec=LIMITS, n=st.integers(1, 120), more=st.integers(1, 60),
       start=st.integers(0, 86_399))
def test_finish_is_monotone_in_the_job_count(tmp_path_factory, spec, n, more, start):
    cfg = _cfg(tmp_path_factory.mktemp("c"), a_limits=_limits(spec))
    now = NOON - 12 * 3600 + start
    a = _plan(cfg, n, now=now)
    b = _plan(cfg, n + more, now=now)
    assert a.finish_at is not None and b.finish_at is not None
    assert b.finish_at >= a.finish_at


@settings(max_examples=25, deadline=None)
@given(spec=LIMITS, n=st.integers(1, 150), start=st.integers(0, 86_399))
def test_never_earlier_than_the_limits_allow(tmp_path_factory, spec, n, start):
    cfg = _cfg(tmp_path_factory.mktemp("c"), a_limits=_limits(spec), concurrency=256,
               latency=0.5)
    now = NOON - 12 * 3600 + start
    f = _plan(cfg, n, now=now)
    cost = _jobs(cfg, 1)[0].costs[0]
    for lim in rules(cfg)[0].values():
        per_job = cost.of(lim.unit)
        fit = lim.cap // per_job  # jobs one window or period admits
        waves = math.ceil(n / fit)
        if lim.window_s:
            # Each full window admits at most `fit` jobs.
            assert f.finish_at >= now + (waves - 1) * lim.window_s + 0.5 - 1e-6
        elif waves > 1:
            # The jobs beyond one period's share cannot start before the next period.
            from workers.quota.limits import calendar_period

            assert f.finish_at >= calendar_period(lim.per, lim.tz, now).end
    # ... and every job is served, each window never over its limit.
    assert sum(f.targets.values()) == n


def test_fixed_utc_offsets_are_time_zones(tmp_path):
    from dispatcher.config import ConfigError
    from dispatcher.config.models import Per
    from workers.quota.limits import calendar_period

    p = calendar_period(Per.day, "+05:47", NOON)
    assert datetime.fromtimestamp(p.start, UTC).strftime("%H:%M") == "18:13"
    assert p.end - p.start == 86400
    assert calendar_period(Per.day, "UTC-03:00", NOON).start == NOON - 9 * 3600
    with pytest.raises(ConfigError, match="unknown time zone"):
        _cfg(tmp_path, a_limits=[], tz="+25:00")


def test_token_limits_keep_the_reported_usage_not_the_estimate(tmp_path):
    cfg = _cfg(tmp_path, a_limits=[{"unit": "tokens", "limit": 2000, "per": "minute"}])
    specs = parse_batch([job_line(f"j{i}", "fast", max_tokens=200) for i in range(60)], cfg)
    pessimist = simulate(empty_world(cfg, NOON), planned_jobs(specs, cfg, "normal", 1))
    learned = planned_jobs(specs, cfg, "normal", 1, typical_out={"a/m": 32.0})
    f = simulate(empty_world(cfg, NOON), learned)
    est, kept = learned[0].costs[0], learned[0].charges[0]
    assert kept.tokens == est.tokens - 200 + 32
    # A job starts only when its whole estimate fits, but the window keeps what was used.
    first_window = (2000 - est.tokens) // kept.tokens + 1
    assert f.done_by(NOON + 30) == first_window
    assert pessimist.done_by(NOON + 30) == 2000 // est.tokens
    assert f.finish_at < pessimist.finish_at
