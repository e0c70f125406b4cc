"""Hammer: several OS processes reserve concurrently against one Redis; a checker then
proves from the server timestamps of every grant that no half-open window of any limit
ever held more than the limit, and that the binding limit was used to >= 95%."""

from __future__ import annotations

import math
import multiprocessing as mp
import random
import time
import uuid
from pathlib import Path

import pytest
import redis

from dispatcher.config import load_config
from workers.quota.costs import Cost
from workers.quota.engine import QuotaEngine

REDIS_URL = "redis://127.0.0.1:6379/1"
RUN_S = 9.0
PROVIDERS = """\
providers:
  hp:
    base_url: https://hp.invalid/v1
    api_key_env: HP_API_KEY
    limits:
      - {unit: requests, limit: 30, per: second}
    models:
      - id: a
        limits:
          - {unit: requests, limit: 20, per: second}
          - {unit: tokens, limit: 4000, per: second}
          - {unit: tokens, limit: 400000, per: minute}
      - id: b
        limits:
          - {unit: requests, limit: 20, per: second}
          - {unit: tokens, limit: 100000, per: minute}
"""
# (scope filter, unit, limit, window seconds): every limit above, for the checker.
LIMITS = [
    (None, "requests", 30, 1.0),
    ("a", "requests", 20, 1.0),
    ("a", "tokens", 4000, 1.0),
    ("a", "tokens", 400000, 60.0),
    ("b", "requests", 20, 1.0),
    ("b", "tokens", 100000, 60.0),
]


def hammer(cfg_dir: str, ns: str, model: str, seed: int, barrier, out) -> None:
    """One worker process: reserve as fast as the quota allows, sleeping exactly the
    returned wait after a refusal; report (server time, model, tokens) of every grant."""
    cfg = load_config(cfg_dir)
    engine = QuotaEngine(redis.Redis.from_url(REDIS_URL, decode_responses=True), cfg, ns)
    target = cfg.target(f"hp/{model}")
    rng = random.Random(seed)
    engine.probe(target, Cost(1, 1))  # connect and load the script before the start
    barrier.wait()
    stop = time.time() + RUN_S
    grants = []
    cost = Cost(1, rng.randint(50, 500))
    while time.time() < stop:
        r = engine.reserve(target, cost)
        if r.granted:
            grants.append((r.at, model, cost.tokens))
            cost = Cost(1, rng.randint(50, 500))
        else:
            assert not r.never
            time.sleep(min(r.wait_s, max(0.0, stop - time.time())))
    out.put(grants)


def max_window(events: list[tuple[float, int]], window: float) -> int:
    """Largest total cost in any half-open window [t, t + window) (it suffices to start
    windows at events)."""
    events.sort()
    best = total = j = 0
    for i in range(len(events)):
        while j < len(events) and events[j][0] < events[i][0] + window:
            total += events[j][1]
            j += 1
        best = max(best, total)
        total -= events[i][1]
    return best


def test_max_window_checker() -> None:
    ev = [(0.0, 1), (0.5, 1), (0.999, 1), (1.0, 1), (1.5, 1)]
    assert max_window(list(ev), 1.0) == 3
    assert max_window([(0.0, 5), (1.0, 5)], 1.0) == 5


@pytest.mark.timeout(60)
def test_hammer_processes_never_exceed_and_waste_nothing(tmp_path: Path) -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    (tmp_path / "providers.yaml").write_text(PROVIDERS)
    (tmp_path / "routes.yaml").write_text("routes: {}\n")
    ns = f"qhammer-{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    models = ["a", "a", "b", "b"]
    barrier = ctx.Barrier(len(models))
    out = ctx.Queue()
    procs = [ctx.Process(target=hammer, args=(str(tmp_path), ns, m, i, barrier, out))
             for i, m in enumerate(models)]
    try:
        for p in procs:
            p.start()
        grants = [g for _ in procs for g in out.get(timeout=50)]
        for p in procs:
            p.join(10)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        keys = list(client.scan_iter(f"{ns}:*", count=1000))
        if keys:
            client.delete(*keys)

    # 1. Never exceeded: every limit, every half-open window of its length.
    for model, unit, limit, window in LIMITS:
        events = [(t, 1 if unit == "requests" else tokens)
                  for t, m, tokens in grants if model is None or m == model]
        assert max_window(events, window) <= limit, (model, unit, limit)

    # 2. Nothing wasted: the binding limit (provider-wide 30 requests/second, since the
    # two models want 40) is used to >= 95% over whole windows from the first grant.
    times = sorted(t for t, _, _ in grants)
    t0 = times[0]
    k = math.floor(times[-1] - t0)
    assert k >= 7
    in_windows = sum(1 for t in times if t < t0 + k)
    print(f"hammer: {len(grants)} grants, {in_windows}/{30 * k} in {k} windows")
    assert in_windows >= 0.95 * 30 * k, (in_windows, 30 * k)
    assert {m for _, m, _ in grants} == {"a", "b"}
