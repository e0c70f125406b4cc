"""End to end: real Redis, real Celery worker processes, the real HTTP simulator."""

from __future__ import annotations

import base64
import json
import os
import signal
import time

import pytest

from tests.cluster import Cluster, job_line, model, provider, write_config

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 40).decode()


def minute(n: int) -> dict:
    return {"unit": "requests", "limit": n, "per": "minute"}


def day(n: int) -> dict:
    return {"unit": "requests", "limit": n, "per": "day"}


@pytest.fixture
def make_cluster(tmp_path):
    clusters: list[Cluster] = []

    def make(providers: dict, routes: dict, settings: dict | None = None, **kw) -> Cluster:
        cfg = write_config(tmp_path / f"config{len(clusters)}", providers, routes,
                           settings or {"routing": {"preference_delay_s": 2.0, "horizon_s": 1.0}})
        c = Cluster(cfg, tmp_path, **kw).__enter__()
        clusters.append(c)
        return c

    yield make
    for c in clusters:
        c.__exit__(None, None, None)


def served_by(line: dict) -> str:
    d = line["dispatch"]
    return f"{d['provider']}/{d['model']}"


def test_batch_completes_in_input_order_with_zero_over_limit(make_cluster):
    c = make_cluster(
        {"alpha": provider(model("a1", limits=[{"unit": "requests", "limit": 5,
                                                "per": "second"}])),
         "beta": provider(model("b1"), dialect="groq")},
        {"fast": ["alpha/a1", "beta/b1"]},
    )
    c.start_worker("--all")
    lines = [job_line(f"j{i}", "fast") for i in range(30)]
    results = c.wait(c.submit(lines), timeout=60)
    assert [r["custom_id"] for r in results] == [f"j{i}" for i in range(30)]
    assert all(r["response"]["status_code"] == 200 for r in results)
    assert all(r["dispatch"]["simulated"] is True for r in results)
    stats = c.stats()
    assert stats["totals"]["over_limit"] == 0
    assert stats["totals"]["ok"] >= 30


def test_fallback_when_daily_quota_is_spent(make_cluster):
    c = make_cluster(
        {"alpha": provider(model("a1"), limits=[day(3)]),
         "beta": provider(model("b1"))},
        {"reasoning": ["alpha/a1", "beta/b1"]},
    )
    c.start_worker("--all")
    results = c.wait(c.submit([job_line(f"j{i}", "reasoning") for i in range(8)]))
    by = [served_by(r) for r in results]
    assert by.count("alpha/a1") == 3
    assert by.count("beta/b1") == 5
    assert c.stats()["totals"]["over_limit"] == 0


def test_429_with_retry_after_cools_the_target_and_keeps_the_preference(make_cluster):
    c = make_cluster(
        {"alpha": provider(model("a1")), "beta": provider(model("b1"))},
        {"fast": ["alpha/a1", "beta/b1"]},
    )
    c.sim.inject("alpha", "429", count=1, retry_after=1)
    c.start_worker("--all")
    t0 = time.monotonic()
    [line] = c.wait(c.submit([job_line("only", "fast")]))
    assert served_by(line) == "alpha/a1"  # freed within the preference delay: still preferred
    assert line["dispatch"]["attempts"] == 1  # the 429 is not an attempt
    assert time.monotonic() - t0 >= 1.0
    assert c.stats()["targets"]["alpha/a1"]["received"] == 2


def test_5xx_is_retried_then_falls_back(make_cluster):
    c = make_cluster(
        {"alpha": provider(model("a1"), max_retries=1), "beta": provider(model("b1"))},
        {"fast": ["alpha/a1", "beta/b1"]},
    )
    c.sim.inject("alpha", "503", count=5)
    c.start_worker("--all")
    [line] = c.wait(c.submit([job_line("x", "fast")]))
    assert served_by(line) == "beta/b1"
    assert line["dispatch"]["attempts"] == 3  # two on alpha (1 retry), one on beta


def test_400_fails_at_once_with_the_upstream_error(make_cluster):
    c = make_cluster(
        {"alpha": provider(model("a1")), "beta": provider(model("b1"))},
        {"fast": ["alpha/a1", "beta/b1"]},
    )
    c.sim.inject("alpha", "400", count=1)
    c.start_worker("--all")
    [line] = c.wait(c.submit([job_line("bad", "fast")]))
    assert line["response"]["status_code"] == 400
    assert "error" in line["response"]["body"]
    assert line["dispatch"]["attempts"] == 1
    assert c.stats()["targets"]["beta/b1"]["received"] == 0


def test_context_window_and_vision_and_pinned_routing(make_cluster):
    c = make_cluster(
        {"small": provider(model("s1", context_window=600)),
         "big": provider(model("b1", context_window=100000)),
         "eye": provider(model("v1", vision=True))},
        {"fast": ["small/s1", "big/b1"], "vision": ["small/s1", "eye/v1"]},
    )
    c.start_worker("--all")
    image_job = json.dumps({
        "custom_id": "img", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "vision", "max_tokens": 16, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": PNG}}]}]}})
    lines = [
        job_line("short", "fast"),
        job_line("long", "fast", text="word " * 1200),
        image_job,
        job_line("pinned", "big/b1"),
    ]
    results = {r["custom_id"]: r for r in c.wait(c.submit(lines))}
    assert served_by(results["short"]) == "small/s1"
    assert served_by(results["long"]) == "big/b1"
    assert served_by(results["img"]) == "eye/v1"
    assert served_by(results["pinned"]) == "big/b1"


def test_context_overflow_from_upstream_moves_to_a_larger_window(make_cluster):
    c = make_cluster(
        {"small": provider(model("s1", context_window=8000)),
         "big": provider(model("b1", context_window=100000))},
        {"fast": ["small/s1", "big/b1"]},
    )
    c.sim.inject("small", "context", count=1)
    c.start_worker("--all")
    [line] = c.wait(c.submit([job_line("x", "fast")]))
    assert served_by(line) == "big/b1"


def test_rate_limited_backlog_sends_nothing_over_the_limit(make_cluster):
    c = make_cluster(
        {"alpha": provider(model("a1", limits=[
            {"unit": "requests", "limit": 4, "per": "second"},
            {"unit": "tokens", "limit": 3000, "per": "minute"}]), dialect="groq")},
        {"bulk": ["alpha/a1"]},
        latency=(0.01, 0.05),
    )
    c.start_worker("--all")
    results = c.wait(c.submit([job_line(f"j{i}", "bulk") for i in range(24)]), timeout=90)
    assert all(r["response"]["status_code"] == 200 for r in results)
    stats = c.stats()
    assert stats["totals"]["over_limit"] == 0
    assert stats["totals"]["rate_limited"] == 0


def test_killed_provider_worker_loses_and_duplicates_nothing(make_cluster):
    c = make_cluster(
        {"alpha": provider(model("a1", limits=[{"unit": "requests", "limit": 10,
                                                "per": "second"}]))},
        {"fast": ["alpha/a1"]},
        latency=(0.3, 0.6), visibility_timeout=8,
    )
    c.start_worker(name="router")
    victim = c.start_worker("--provider", "alpha", name="victim")
    batch = c.submit([job_line(f"j{i}", "fast") for i in range(40)])
    deadline = time.monotonic() + 30
    while c.batch(batch)["completed"] < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    done_at_kill = c.batch(batch)["completed"]
    assert done_at_kill < 40, "the batch finished before the kill: nothing was tested"
    c.start_worker("--provider", "alpha", name="replacement")
    results = c.wait(batch, timeout=120)
    assert [r["custom_id"] for r in results] == [f"j{i}" for i in range(40)]
    assert all(r["response"]["status_code"] == 200 for r in results)
    info = c.batch(batch)
    assert info["completed"] == 40 and info["failed"] == 0
    assert c.stats()["totals"]["over_limit"] == 0


def test_a_small_batch_is_not_stuck_behind_a_big_one(make_cluster):
    c = make_cluster(
        {"alpha": provider(model("a1", limits=[{"unit": "requests", "limit": 10,
                                                "per": "second"}]))},
        {"bulk": ["alpha/a1"]},
    )
    c.start_worker("--all")
    big = c.submit([job_line(f"big{i}", "bulk") for i in range(80)])
    deadline = time.monotonic() + 30
    while c.batch(big)["completed"] < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    small = c.submit([job_line(f"small{i}", "bulk") for i in range(2)])
    c.wait(small, timeout=30)
    assert c.batch(big)["completed"] < 40, "the small batch waited for most of the big one"
    c.wait(big, timeout=60)


def test_jobs_waiting_for_quota_wait_in_redis_not_in_workers(make_cluster):
    c = make_cluster(
        {"alpha": provider(model("a1"), limits=[day(2)])},
        {"fast": ["alpha/a1"]},
    )
    c.start_worker("--all")
    batch = c.submit([job_line(f"w{i}", "fast") for i in range(6)])
    deadline = time.monotonic() + 30
    while c.batch(batch)["completed"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(3.0)
    from workers.celery_app import provider_queue
    from workers.runtime import get_runtime

    store = get_runtime().store
    waiting = [m for sig in store.waitsets() for m in c.r.zrange(store.wait_key(sig), 0, -1)]
    assert sorted(waiting) == sorted(f"{batch}:{i}" for i in range(2, 6))
    assert c.r.llen(provider_queue("alpha")) == 0  # nothing parked in the broker
    assert c.r.zcard(store.queued_key("alpha/a1")) == 0  # nor in a worker
    assert c.batch(batch)["completed"] == 2
    stats = c.stats()["targets"]["alpha/a1"]
    assert stats["received"] == 2 and stats["rate_limited"] == 0  # no hammering upstream
