"""``dispatch run`` says what a stalled batch waits for: the pure rule, and the real quota
engine's answer for a target whose daily limit is spent."""

from __future__ import annotations

import uuid

import redis
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.batchfile import JobSpec
from dispatcher.config import load_config
from dispatcher.waiting import StallWatch, TargetWait, explain, target_waits
from tests.cluster import TEST_REDIS_URL, model, provider, write_config
from workers.runtime import Runtime


def wait(target="p/m", granted=False, wait_s=30.0, limit="requests/minute", never=False,
         full=False) -> TargetWait:
    return TargetWait(target, granted, wait_s, limit, never, full)


def test_it_names_the_limit_and_when_it_frees_soonest_first():
    line = explain([wait("b/m", wait_s=7200, limit="requests/day"),
                    wait("a/m", wait_s=30, limit="tokens/minute")], 0.0, live_workers=2)
    assert line.startswith("no job moved for a minute; waiting for a/m: tokens/minute until "
                           "00:00:30 UTC (in 30s); b/m: requests/day until 02:00:00 UTC")


def test_it_says_when_no_worker_runs_or_when_quota_is_there_but_nothing_starts():
    assert "no worker is running" in explain([wait()], 0.0, live_workers=0)
    assert "are workers for p running?" in explain([wait(granted=True)], 0.0, 1)
    assert "every slot in a call" in explain([wait(granted=True, full=True)], 0.0, 1)
    assert "never" in explain([wait(never=True, wait_s=float("inf"))], 0.0, 1)


NAME = st.from_regex(r"[a-z]{1,5}/[a-z0-9.-]{1,8}", fullmatch=True)
LIMIT = st.one_of(st.none(), st.from_regex(r"[a-z]{1,8}/[a-z]{1,6}", fullmatch=True))


@given(st.lists(st.builds(TargetWait, NAME, st.booleans(), st.floats(0, 1e7), LIMIT,
                          st.booleans(), st.booleans()), max_size=5),
       st.integers(0, 3))
def test_explain_always_gives_one_line(waits, workers):
    line = explain(waits, 1_700_000_000.0, workers)
    assert line.startswith("no job moved for a minute; ") and "\n" not in line
    if workers and waits and not any(w.granted and not w.full for w in waits):
        assert all(w.target in line for w in waits)  # every target is accounted for


def test_a_spent_daily_limit_is_named_after_the_stall(tmp_path):
    cfg = load_config(write_config(
        tmp_path / "c", {"alpha": provider(model("a1"), limits=[
            {"unit": "requests", "limit": 1, "per": "day"}])}, {"fast": ["alpha/a1"]}),
        simulate=True)
    r = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    rt = Runtime(cfg, r, "tw" + uuid.uuid4().hex[:8])
    try:
        rt.sim_quota.ensure_limits()
        target = cfg.target("alpha/a1")
        spec = JobSpec(line=1, custom_id="j", tag="fast", pinned=None,
                       body={"messages": [{"role": "user", "content": "hi"}]},
                       targets=["alpha/a1"])
        batch, _ = rt.store.create_batch([spec], simulated=True, deadline_s=600)
        from workers.quota.costs import estimate_cost

        cost = estimate_cost(spec.body, target.model, cfg.settings.quota, cfg.settings.jobs)
        assert rt.sim_quota.reserve(target, cost).granted  # the day's only request
        (w,) = target_waits(rt, batch)
        assert not w.granted and "day" in (w.limit or "")
        r.set(f"{rt.namespace}:lease:someone", "{}", px=10_000)
        watch = StallWatch(rt, batch, stall_s=0.0)
        assert watch.check(0) is None  # the first look: it just moved
        note = watch.check(0)
        assert note and "alpha/a1" in note and "day" in note and "UTC" in note
    finally:
        for key in r.scan_iter(f"{rt.namespace}*", count=1000):
            r.delete(key)
