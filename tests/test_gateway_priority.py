"""Interactive requests go ahead of batch jobs waiting for the same target (real workers)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import redis

from tests.cluster import TEST_REDIS_URL, Cluster, job_line, model, provider, write_config
from tests.gateway_server import GatewayServer
from workers import interactive


def test_demand_claims_expire_and_make_the_batch_side_yield(monkeypatch) -> None:
    r = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    ns = "t" + uuid.uuid4().hex[:8]
    rt = SimpleNamespace(r=r, namespace=ns, config=SimpleNamespace(settings=SimpleNamespace(
        routing=SimpleNamespace(horizon_s=2.0))))
    try:
        assert not interactive.yields(rt, "p/m1")
        assert interactive.batch_delay(rt, "p/m1", 0.0) == 0.0
        interactive.register(r, ns, "p/m1", "w1")
        interactive.register(r, ns, "p/m1", "w2")
        assert interactive.yields(rt, "p/m1") and not interactive.yields(rt, "p/m2")
        assert interactive.batch_delay(rt, "p/m1", 0.0) > 2.0       # past the horizon
        assert interactive.batch_delay(rt, "p/m1", None) is None    # never stays never
        interactive.withdraw(r, ns, {"p/m1"}, "w1")
        assert interactive.yields(rt, "p/m1")                       # w2 still waits
        interactive.withdraw(r, ns, {"p/m1"}, "w2")
        assert not interactive.yields(rt, "p/m1")
        monkeypatch.setattr(interactive, "DEMAND_TTL_S", 0.2)
        interactive.register(r, ns, "p/m1", "gone")                 # a gateway that died
        assert interactive.yields(rt, "p/m1")
        time.sleep(0.3)
        assert not interactive.yields(rt, "p/m1")
        assert interactive.reservation_id().startswith(interactive.RESERVATION_PREFIX)
    finally:
        for key in r.scan_iter(f"{ns}*"):
            r.delete(key)


def test_interactive_requests_jump_a_saturating_batch_backlog(tmp_path: Path) -> None:
    limits = [{"unit": "requests", "limit": 2, "per": "second"}]
    cfg = write_config(tmp_path / "config", {"p": provider(model("m1", limits=limits))},
                       {"fast": ["p/m1"]})
    with Cluster(cfg, tmp_path) as cluster, GatewayServer(cfg) as gw:
        cluster.start_worker("--all")
        batch = cluster.submit([job_line(f"j{i}", "fast", max_tokens=4) for i in range(30)])
        end = time.monotonic() + 60
        while cluster.batch(batch).get("completed", 0) < 4:          # the backlog is flowing
            assert time.monotonic() < end, cluster.log("w0")[-3000:]
            time.sleep(0.05)
        waits = []
        for _ in range(4):
            start = time.monotonic()
            r = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30,
                           json={"model": "fast", "messages": [{"role": "user",
                                                                "content": "now"}]},
                           headers={"X-Dispatch-Max-Wait": "20"})
            waits.append(time.monotonic() - start)
            assert r.status_code == 200 and r.headers["x-dispatch-target"] == "p/m1"
            time.sleep(0.2)
        info = cluster.batch(batch)
        assert info["completed"] + info["failed"] < info["total"]    # batch jobs still waited
        # 2/second: the target frees within a second; an interactive request never waits
        # for the batch jobs queued before it (30 jobs are ~15 s of backlog)
        assert max(waits) < 1.6, waits
        from dispatcher.batches import cancel

        cancel(batch)
        assert cluster.stats()["totals"]["over_limit"] == 0
