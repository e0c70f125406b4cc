"""Batch priorities: high before normal before low, and a lower priority never starves.

The order is the waiting sets' score (``fair_score`` with the priority's share); the
pipeline tests run real ``dispatch worker`` processes against the simulator on one target
with a single slot, so the order jobs are served in is the order they end in.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.batchfile import parse_batch
from dispatcher.config import ConfigError, load_config
from dispatcher.config.models import PrioritySettings
from tests.cluster import Cluster, job_line, model, provider, write_config
from workers.jobstore import fair_score
from workers.priority import share


@settings(max_examples=200, deadline=None)
@given(w_high=st.integers(1, 200), w_low=st.integers(1, 200), n_high=st.integers(1, 300),
       n_low=st.integers(1, 300), seq_high=st.integers(1, 5000), seq_low=st.integers(1, 5000))
def test_each_priority_gets_its_share_and_keeps_its_order(w_high, w_low, n_high, n_low,
                                                         seq_high, seq_low):
    w_high, w_low = max(w_high, w_low), min(w_high, w_low)
    weights = PrioritySettings(high=w_high, normal=w_low, low=w_low)
    hs = share("high", weights)
    ls = share("low", weights)
    jobs = [(fair_score(i, seq_high, hs), "h", i) for i in range(n_high)]
    jobs += [(fair_score(i, seq_low, ls), "l", i) for i in range(n_low)]
    order = [(who, i) for _, who, i in sorted(jobs)]
    # Input order is kept within each batch.
    for who in "hl":
        mine = [i for w, i in order if w == who]
        assert mine == sorted(mine)
    # In every prefix, each batch has at least its weighted share (within two jobs: the
    # batch-sequence tie-break shifts a batch by up to one step of the highest share).
    h = low = 0
    for who, _ in order:
        h += who == "h"
        low += who == "l"
        if low < n_low:
            assert low >= h * w_low / w_high - 2
        if h < n_high:
            assert h >= low * w_high / w_low - 2


def test_priority_weights_are_validated(tmp_path):
    d = write_config(tmp_path / "c", {"a": provider(model("m"))}, {"fast": ["a/m"]},
                     settings={"priorities": {"high": 1, "normal": 10, "low": 1}})
    with pytest.raises(ConfigError, match="high >= normal >= low"):
        load_config(d)
    d = write_config(tmp_path / "d", {"a": provider(model("m"))}, {"fast": ["a/m"]},
                     schedules={"x": {"cron": "* * * * *", "jobs": [], "priority": "urgent"}})
    with pytest.raises(ConfigError, match="priority"):
        load_config(d)


def _one_slot(tmp_path, priorities=None):
    settings_doc = {"routing": {"preference_delay_s": 0.5, "horizon_s": 0.5}}
    if priorities:
        settings_doc["priorities"] = priorities
    return write_config(tmp_path / "cfg", {"a": provider(model("m"), concurrency=1)},
                        {"fast": ["a/m"]}, settings_doc)


def _submit(c: Cluster, prefix: str, n: int, priority: str) -> str:
    from dispatcher.batches import submit

    cfg = load_config(c.config_dir, simulate=True)
    specs = parse_batch([job_line(f"{prefix}{i}", "fast") for i in range(n)], cfg)
    return submit(specs, simulated=True, deadline_s=600, priority=priority)


def _follow(c: Cluster, batches: dict[str, str], timeout: float = 90) -> list[dict]:
    """Snapshots of every batch's completed count, each time one changes, until all end."""
    seen: list[dict] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        now = {name: c.batch(b)["completed"] + c.batch(b)["failed"]
               for name, b in batches.items()}
        if not seen or now != seen[-1]:
            seen.append(now)
        if all(now[name] >= c.batch(b)["total"] for name, b in batches.items()):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"batches did not end: {seen[-1] if seen else None}")


def test_high_before_normal_before_low_with_real_workers(tmp_path):
    with Cluster(_one_slot(tmp_path), tmp_path, latency=(0.05, 0.05)) as c:
        # Queued before any worker runs, lowest priority first: only the low batch's first
        # job was handed out (the single slot was free when it arrived).
        batches = {"low": _submit(c, "l", 8, "low"), "normal": _submit(c, "n", 8, "normal"),
                   "high": _submit(c, "h", 8, "high")}
        c.start_worker("--all")
        seen = _follow(c, batches)
    high_done = next(s for s in seen if s["high"] == 8)
    normal_done = next(s for s in seen if s["normal"] == 8)
    assert high_done["normal"] <= 1 and high_done["low"] <= 1
    assert normal_done["low"] <= 1
    assert seen[-1] == {"low": 8, "normal": 8, "high": 8}


def test_a_low_priority_batch_is_not_starved_by_a_high_one(tmp_path):
    # high:low = 10:1 -> the low batch gets a job after every ten of the high one.
    weights = {"high": 10, "normal": 5, "low": 1}
    with Cluster(_one_slot(tmp_path, weights), tmp_path, latency=(0.05, 0.05)) as c:
        batches = {"high": _submit(c, "h", 40, "high"), "low": _submit(c, "l", 3, "low")}
        c.start_worker("--all")
        seen = _follow(c, batches)
    low_first = next(s for s in seen if s["low"] >= 1)
    low_done = next(s for s in seen if s["low"] == 3)
    assert low_first["high"] <= 12  # its first job after about ten of the high batch's
    assert low_done["high"] < 40    # all of it long before the high batch ends


def test_a_schedule_entry_submits_with_its_priority(tmp_path):
    job = {"body": {"model": "fast", "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 8}}
    cfg = write_config(tmp_path / "config", {"a": provider(model("m"))}, {"fast": ["a/m"]},
                       schedules={"night": {"cron": "0 2 * * *", "jobs": [job],
                                            "priority": "low"},
                                  "plain": {"cron": "0 3 * * *", "jobs": [job]}})
    with Cluster(cfg, tmp_path):
        from workers.runtime import get_runtime
        from workers.schedules import run_schedule

        store = get_runtime().store
        for name, want in (("night", "low"), ("plain", "normal")):
            got = run_schedule.apply(args=[name], kwargs={"tick": 60, "simulated": True}).get()
            assert got["status"] == "submitted"
            assert store.batch(got["batch"])["priority"] == want
            first = store.r.hget(store.job_key(f"{got['batch']}:0"), "score")
            assert float(first) >= 1000 / share(want)
