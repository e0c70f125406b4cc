"""Charges follow the upstream: what a sent, unsent, failed or refused request costs.

The rule (workers/attempt.py ``charge``) is a pure table, tested without I/O; the engine
side (a request that never left is given back whole) against the real Redis; and the
whole path with real workers and the simulator: requests that time out *after* reaching
the upstream keep their charge, so no arrival goes over a token limit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from dispatcher.config import load_config
from tests.cluster import Cluster, job_line, model, provider, write_config
from workers.attempt import charge
from workers.providers.outcomes import JobRejected, RateLimited, Success, Transient
from workers.quota.costs import Cost
from workers.quota.engine import QuotaEngine

ESTIMATE = Cost(1, 500, 0)
USAGE = {"prompt_tokens": 90, "completion_tokens": 10, "total_tokens": 100}


def _config(tmp_path: Path, **extra):
    limits = [{"unit": "tokens", "limit": 1000, "per": "minute"},
              {"unit": "tokens", "limit": 100000, "per": "day"},
              {"unit": "requests", "limit": 50, "per": "minute"},
              {"unit": "requests", "limit": 500, "per": "day"}]
    return load_config(write_config(tmp_path / "c", {
        "alpha": provider(model("a1", limits=limits), **extra)}, {"fast": ["alpha/a1"]}))


@pytest.mark.parametrize("count_429_tokens", [True, False])
def test_charge_table(tmp_path: Path, count_429_tokens: bool) -> None:
    target = _config(tmp_path, count_429_tokens=count_429_tokens).target("alpha/a1")
    limited = RateLimited(429, {}, 1.0, "model", False, "slow down")
    # never left (refused connection, no connection in time): given back whole
    assert charge(Transient(None, None, "refused"), False, target, ESTIMATE) == Cost(0, 0, 0)
    # reached the wire: the upstream's usage wins ...
    assert charge(Success({}, USAGE, 200), True, target, ESTIMATE) == Cost(1, 100, 0)
    # ... and without usage the estimate stays: a timeout, a 5xx, a 400
    assert charge(Transient(None, None, "timed out"), True, target, ESTIMATE) is None
    assert charge(Transient(503, "down", "HTTP 503"), True, target, ESTIMATE) is None
    assert charge(JobRejected(400, {}, "bad"), True, target, ESTIMATE) is None
    assert charge(Success({}, None, 200), True, target, ESTIMATE) is None
    # a 429 counts as a request; its tokens per the provider's setting
    expected = None if count_429_tokens else Cost(1, 0, 0)
    assert charge(limited, True, target, ESTIMATE) == expected


def _used(engine: QuotaEngine) -> dict[tuple[str, str], float]:
    return {(s.unit.value, s.per.value): s.used for s in engine.snapshot()}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[QuotaEngine]:
    """A quota engine on Redis DB 1 in a namespace of its own, removed afterwards."""
    client = redis.Redis.from_url("redis://127.0.0.1:6379/1", decode_responses=True)
    name = f"chg-{uuid.uuid4().hex[:10]}"
    yield QuotaEngine(client, _config(tmp_path), namespace=name)
    for key in list(client.scan_iter(f"{name}:*", count=1000)):
        client.delete(key)
    client.close()


def test_a_request_that_never_left_is_given_back_whole(engine: QuotaEngine) -> None:
    target = engine.config.target("alpha/a1")
    kept = engine.reserve(target, Cost(1, 300))
    unsent = engine.reserve(target, Cost(1, 200))
    assert kept.granted and unsent.granted
    assert _used(engine) == {("tokens", "minute"): 500, ("tokens", "day"): 500,
                             ("requests", "minute"): 2, ("requests", "day"): 2}
    assert engine.reconcile(unsent.reservation_id, Cost(0, 0, 0))
    assert _used(engine) == {("tokens", "minute"): 300, ("tokens", "day"): 300,
                             ("requests", "minute"): 1, ("requests", "day"): 1}
    # reported usage replaces tokens; the request stays charged; a second reconcile is inert
    assert engine.reconcile(kept.reservation_id, Cost(1, 120))
    assert not engine.reconcile(kept.reservation_id, Cost(0, 0, 0))
    assert _used(engine) == {("tokens", "minute"): 120, ("tokens", "day"): 120,
                             ("requests", "minute"): 1, ("requests", "day"): 1}


def test_timeouts_after_arrival_keep_their_charge_and_nothing_goes_over(tmp_path: Path) -> None:
    """Answers slower than the client's timeout: the simulator counted those requests, so
    the quota must too. A tokens/second limit is the binding one; the simulator judges
    every arrival against it (over_limit counts arrivals that would break it). Small
    prompts, the whole max_tokens used: the estimate is close to the usage, so a timed-out
    request given back (main's old rule: 4 arrivals over the limit here) shows at once."""
    cfg = write_config(tmp_path / "c", {"alpha": provider(
        model("a1", limits=[{"unit": "tokens", "limit": 700, "per": "second"}]),
        timeout_s=0.8, max_retries=3, concurrency=12)}, {"fast": ["alpha/a1"]},
        {"routing": {"preference_delay_s": 2.0, "horizon_s": 1.0}})
    with Cluster(cfg, tmp_path, latency=(0.05, 1.3)) as c:
        c.sim._rng.seed(12)  # about 4 answers in 10 come after the client gave up
        c.start_worker("--all")
        lines = [job_line(f"j{i}", "fast", max_tokens=32) for i in range(60)]
        results = c.wait(c.submit(lines), timeout=150)
        stats = c.stats()
    assert len(results) == 60
    received = stats["totals"]["received"]
    assert received > 60, "no request timed out: the test proves nothing"
    assert stats["totals"]["over_limit"] == 0, stats["limits"]
    assert stats["totals"]["rate_limited"] == 0
    assert sum(line["response"] is not None and line["response"]["status_code"] == 200
               for line in results) >= 40
