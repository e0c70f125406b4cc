"""A request leaves when its quota is granted, or its charge follows it.

The sender tells when a request is on the wire, so a late one can correct its quota; the
pool never makes a granted call wait for a connection; a grant that leaves after midnight
is charged to the new day.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from dispatcher.config import load_config
from dispatcher.config.models import Per
from tests.cluster import model, provider, write_config
from workers.providers.client import ClientPool, ProviderClient
from workers.quota.costs import Cost
from workers.quota.engine import QuotaEngine
from workers.quota.limits import calendar_period
from workers.simulator import Simulator


def test_on_sent_runs_once_after_the_write_and_before_the_answer(tmp_path):
    cfg = load_config(write_config(tmp_path / "c", {"alpha": provider(model("a1"))},
                                   {"fast": ["alpha/a1"]}), simulate=True)
    with Simulator(cfg, latency=(0.3, 0.3)) as sim:
        client = ProviderClient("alpha", concurrency=2, timeout_s=5)
        sent: list[float] = []
        start = time.monotonic()
        raw = client.send(sim.base_url("alpha"), "test-key",
                          {"model": "a1", "messages": [{"role": "user", "content": "hi"}],
                           "max_tokens": 4},
                          on_sent=lambda: sent.append(time.monotonic()))
        done = time.monotonic()
        client.close()
    assert raw.status == 200
    assert len(sent) == 1
    assert sent[0] - start < 0.1 and done - sent[0] >= 0.25  # written at once, answered later


def test_the_pool_holds_a_connection_for_every_call_the_targets_admit(tmp_path):
    """Four models, concurrency 2: eight calls may be admitted at once, and all eight
    reach the upstream at once (a pool of 2 would send the last six 1 s and 2 s late,
    after they took their quota)."""
    models = [model(f"m{i}") for i in range(4)]
    cfg = load_config(write_config(tmp_path / "c", {"alpha": provider(*models, concurrency=2)},
                                   {"fast": ["alpha/m0"]}), simulate=True)
    with Simulator(cfg, latency=(1.0, 1.0)) as sim, ClientPool(cfg.providers) as pool:
        client = pool.get("alpha")
        sent: list[float] = []
        start = time.monotonic()

        def call(i: int) -> int:
            body = {"model": f"m{i % 4}", "max_tokens": 4,
                    "messages": [{"role": "user", "content": "hi"}]}
            return client.send(sim.base_url("alpha"), "test-key", body,
                               on_sent=lambda: sent.append(time.monotonic())).status

        with ThreadPoolExecutor(8) as ex:
            statuses = list(ex.map(call, range(8)))
    assert statuses == [200] * 8
    assert len(sent) == 8 and max(sent) - start < 0.7


@pytest.fixture
def day_engine(tmp_path):
    cfg = load_config(write_config(tmp_path / "c", {"alpha": provider(model("a1", limits=[
        {"unit": "requests", "limit": 100, "per": "day"},
        {"unit": "tokens", "limit": 10000, "per": "day"},
        {"unit": "tokens", "limit": 5000, "per": "minute"}]))}, {"fast": ["alpha/a1"]}))
    client = redis.Redis.from_url("redis://127.0.0.1:6379/1", decode_responses=True)
    ns = f"late-{uuid.uuid4().hex[:10]}"
    yield QuotaEngine(client, cfg, namespace=ns)
    for key in list(client.scan_iter(f"{ns}:*", count=1000)):
        client.delete(key)
    client.close()


def test_a_grant_that_leaves_after_midnight_is_charged_to_the_new_day(day_engine):
    engine = day_engine
    target = engine.config.target("alpha/a1")
    spent = engine.reserve(target, Cost(1, 300))
    res = engine.reserve(target, Cost(1, 500))
    assert spent.granted and res.granted
    today = calendar_period(Per.day, "UTC", res.at)
    prefix = engine.key_prefix("alpha") + "m:a1:"
    assert not engine.crosses_period(target, res.reservation_id, 0.01)
    late = today.end - res.at + 0.5  # it left half a second after midnight
    assert engine.crosses_period(target, res.reservation_id, late)
    tomorrow = calendar_period(Per.day, "UTC", today.end + 0.5)
    engine.shift(target, Cost(1, 500), res.reservation_id, late)
    r = engine.redis
    assert r.get(f"{prefix}tokens:day:{today.key}") == "300"
    assert r.get(f"{prefix}requests:day:{today.key}") == "1"
    assert r.get(f"{prefix}tokens:day:{tomorrow.key}") == "500"
    assert r.get(f"{prefix}requests:day:{tomorrow.key}") == "1"
    assert r.ttl(f"{prefix}tokens:day:{tomorrow.key}") > 86400
    # reconcile follows the charge to the new day
    assert engine.reconcile(res.reservation_id, Cost(1, 120))
    assert r.get(f"{prefix}tokens:day:{tomorrow.key}") == "120"
    assert r.get(f"{prefix}tokens:day:{today.key}") == "300"


def test_an_unsent_grant_is_given_back_on_the_day_it_was_charged(day_engine):
    engine = day_engine
    target = engine.config.target("alpha/a1")
    res = engine.reserve(target, Cost(1, 500))
    day = calendar_period(Per.day, "UTC", res.at)
    assert engine.reconcile(res.reservation_id, Cost(0, 0, 0))
    prefix = engine.key_prefix("alpha") + "m:a1:"
    assert engine.redis.get(f"{prefix}tokens:day:{day.key}") == "0"
    assert engine.redis.get(f"{prefix}requests:day:{day.key}") == "0"
