"""The HTTP gateway's own upstream calls count toward a provider's ``concurrency``.

Real Redis, the real simulator (it counts the calls it is answering at once:
``max_in_flight``), the real gateway app on uvicorn and, for the mixed case, a real
``dispatch worker --all`` subprocess. The slot scripts are also checked alone on Redis
(leases, counting, the pump's hand-out refusing a target that filled up).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import redis

from dispatcher.batchfile import JobSpec
from tests.cluster import TEST_REDIS_URL, Cluster, job_line, model, provider, write_config
from tests.gateway_server import GatewayServer
from workers.jobstore import JobStore
from workers.slots import Slots

HELLO = [{"role": "user", "content": "hello there"}]
T = "p/m1"


def server_time(r: redis.Redis) -> float:
    sec, usec = r.time()
    return sec + usec / 1e6


def gateway_config(tmp_path: Path, concurrency: int = 2) -> Path:
    return write_config(tmp_path / "config", {
        "p": provider(model("m1"), model("tight", limits=[
            {"unit": "requests", "limit": 1, "per": "minute"}]), model("counted", limits=[
                {"unit": "requests", "limit": 50, "per": "minute"}]),
            concurrency=concurrency),
        "q": provider(model("m2")),
    }, {"fast": ["p/m1", "q/m2"], "solo": ["p/m1"], "tight": ["p/tight"],
        "counted": ["p/counted"]})


def chat(url: str, model_: str, max_wait: float = 30, **extra) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=60,
                      json={"model": model_, "messages": HELLO, "max_tokens": 8, **extra},
                      headers={"X-Dispatch-Max-Wait": str(max_wait)})


def concurrently(n: int, fn) -> list:
    """Run ``fn(i)`` for i < n in n threads released together; their results in order."""
    out: list = [None] * n
    gate = threading.Barrier(n)

    def one(i: int) -> None:
        gate.wait()
        try:
            out[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - reported by the caller's asserts
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def no_slot_left(cluster: Cluster, target: str = T) -> bool:
    return cluster.r.zcard(f"{cluster.namespace}:gwcalling:{target}") == 0


# -- the scripts alone ---------------------------------------------------------------------


def test_slots_count_batch_jobs_once_and_a_dead_gateways_slot_lapses(store) -> None:
    key = store.gwcalling_key(T)
    assert store.gw_take(T, "a", 2, 60)
    assert store.gw_take(T, "dead", 2, 0.2)        # its gateway dies: nobody frees it
    assert not store.gw_take(T, "c", 2, 60)        # two live slots: full
    expiry = store.r.zscore(key, "dead")
    Cluster.wait_for(lambda: server_time(store.r) > expiry, 10, "the lease to lapse", 0.02)
    pipe = store.r.pipeline()
    store.read_occupancy(pipe, T)                  # the pump no longer counts it ...
    assert store.occupancy_of(pipe.execute()) == (0, 1)
    assert store.gw_take(T, "c", 2, 60)            # ... and its slot is taken again
    assert set(store.r.zrange(key, 0, -1)) == {"a", "c"}
    assert 0 < store.r.pttl(key) <= 61_000         # an idle set goes away by itself
    # batch jobs hold slots too; one handed out and started is in both sets: counted once
    now = server_time(store.r)
    store.r.zadd(store.queued_key(T), {"b:0": now, "b:1": now})
    store.r.zadd(store.calling_key(T), {"b:0": now})
    assert not store.gw_take(T, "d", 4, 60)        # a, c, b:0, b:1
    assert store.gw_take(T, "d", 5, 60)


def test_a_long_call_keeps_its_lease_and_a_freed_slot_stays_free(store) -> None:
    key = store.gwcalling_key(T)
    assert store.gw_take(T, "long", 1, 0.5)
    before = store.r.zscore(key, "long")
    assert store.gw_keep([(T, "long", 60)]) == 1
    assert store.r.zscore(key, "long") > before + 50
    store.gw_free([(T, "long")], ["sig-a", "sig-a", "sig-b"])
    assert store.r.zcard(key) == 0
    assert store.r.lrange(store.wake_key, 0, -1) == ["sig-a", "sig-b"]  # the pump wakes
    assert store.gw_keep([(T, "long", 60)]) == 0   # a freed slot is not brought back
    assert store.r.zcard(key) == 0


def test_the_hand_out_refuses_a_target_a_gateway_call_filled_meanwhile(store) -> None:
    spec = JobSpec(line=0, custom_id="j0", tag="solo", pinned=None,
                   body={"messages": HELLO}, targets=[T])
    batch, (sig,) = store.create_batch([spec], simulated=True, deadline_s=60)
    job = store.load(f"{batch}:0")
    assert store.gw_take(T, "gw", 1, 60)           # after the pump counted, before it handed
    assert store.handout(job, T, store.wait_key(sig), "me", concurrency=1) == -1
    assert store.r.zscore(store.wait_key(sig), job.id) is not None  # the job keeps waiting
    assert store.r.hget(store.job_key(job.id), "state") == "waiting"
    store.gw_free([(T, "gw")], [])
    assert store.handout(job, T, store.wait_key(sig), "me", concurrency=1) == 1


def test_releases_are_written_off_the_callers_thread_and_wake_the_pump(store) -> None:
    rt = SimpleNamespace(store=store, sigs_with=lambda target: [f"sig-of-{target}"])
    slots = Slots(rt)
    pc = SimpleNamespace(concurrency=1, timeout_s=5)
    first = slots.new(T, pc)
    assert slots.take(first) and not slots.take(slots.new(T, pc))
    slots.free(first)
    assert slots.settle(T)                         # waited for the write ...
    assert store.r.zcard(store.gwcalling_key(T)) == 0
    assert store.r.lrange(store.wake_key, 0, -1) == [f"sig-of-{T}"]
    assert not slots.settle(T)                     # ... and nothing is pending now
    assert slots.take(slots.new(T, pc))


def test_the_keeper_extends_the_lease_of_a_call_outlasting_it(store, monkeypatch) -> None:
    from workers import slots as slots_module

    monkeypatch.setattr(slots_module, "LEASE_MARGIN_S", 0.0)
    monkeypatch.setattr(slots_module, "REFRESH_S", 0.1)
    slots = Slots(SimpleNamespace(store=store, sigs_with=lambda target: []))
    stream = slots.new(T, SimpleNamespace(concurrency=1, timeout_s=1.5))  # a 1.5 s lease
    assert slots.take(stream)
    key = store.gwcalling_key(T)
    first = store.r.zscore(key, stream.member)
    Cluster.wait_for(lambda: server_time(store.r) > first + 0.5, 10,
                     "the first lease to end", 0.02)
    assert store.r.zscore(key, stream.member) > server_time(store.r)  # still live
    assert not store.gw_take(T, "other", 1, 60)                       # and still counted
    slots.free(stream)
    slots.settle(T)
    Cluster.wait_for(lambda: store.r.zcard(key) == 0, 10, "the slot back")


# -- through the gateway ---------------------------------------------------------------


def test_concurrent_interactive_requests_never_exceed_the_concurrency(tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path, concurrency=2)
    with Cluster(cfg, tmp_path, latency=(0.4, 0.4)) as cluster, GatewayServer(cfg) as gw:
        def one(i: int) -> tuple[int, str]:
            if i % 2:  # half of them streamed
                with httpx.stream("POST", f"{gw.url}/v1/chat/completions", timeout=60,
                                  json={"model": "solo", "messages": HELLO, "stream": True},
                                  headers={"X-Dispatch-Max-Wait": "30"}) as s:
                    body = s.read().decode()
                    assert body.rstrip().endswith("data: [DONE]"), body
                    return s.status_code, s.headers["x-dispatch-target"]
            r = chat(gw.url, "solo")
            return r.status_code, r.headers.get("x-dispatch-target", r.text)

        results = concurrently(8, one)
        assert results == [(200, T)] * 8
        stats = cluster.stats()["targets"][T]
        assert stats["max_in_flight"] == 2           # both slots used, never a third call
        assert stats["ok"] == 8 and stats["in_flight"] == 0
        Cluster.wait_for(lambda: no_slot_left(cluster), 10, "every slot given back")
        assert not list(cluster.r.scan_iter(f"{cluster.namespace}:gw:demand:*"))


def test_batch_jobs_and_interactive_requests_share_the_concurrency(tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path, concurrency=2)
    with Cluster(cfg, tmp_path, latency=(0.5, 0.5)) as cluster, GatewayServer(cfg) as gw:
        cluster.start_worker("--all")
        cluster.wait_for(lambda: list(cluster.r.scan_iter(f"{cluster.namespace}:lease:*")),
                         60, "the worker to start")
        # an interactive call is in flight when the backlog arrives: the pump leaves its slot
        first: list[httpx.Response] = []
        caller = threading.Thread(target=lambda: first.append(chat(gw.url, "solo")))
        caller.start()
        cluster.wait_for(lambda: cluster.stats()["targets"][T]["in_flight"] == 1, 10,
                         "the interactive call to reach the upstream", 0.01)
        batch = cluster.submit([job_line(f"j{i}", "solo", max_tokens=4) for i in range(12)])
        caller.join(30)
        assert first[0].status_code == 200
        cluster.wait_for(lambda: cluster.batch(batch).get("completed", 0) >= 2, 60,
                         "the backlog to flow")
        # more interactive requests while it flows: they wait ahead of it for a slot
        results = concurrently(4, lambda i: chat(gw.url, "solo").status_code)
        assert results == [200] * 4
        lines = cluster.wait(batch, timeout=90)
        assert len(lines) == 12
        assert all(line["response"]["status_code"] == 200 for line in lines)
        stats = cluster.stats()["targets"][T]
        assert stats["ok"] == 17 and stats["over_limit"] == 0
        assert stats["max_in_flight"] == 2, stats
        Cluster.wait_for(lambda: no_slot_left(cluster), 10, "every slot given back")


def test_a_full_target_makes_the_request_wait_for_it_not_fail_over(tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path, concurrency=1)
    with Cluster(cfg, tmp_path) as cluster, GatewayServer(cfg) as gw:
        from workers.runtime import get_runtime

        store = get_runtime().store
        quota = gw.gw.quota()
        counted = gw.gw.config.target("p/counted")

        def used() -> float:
            return next(s.used for s in quota.snapshot()
                        if s.model == "counted" and s.per.value == "minute")

        assert store.gw_take("p/counted", "other-gateway", 1, 60)   # its only slot
        r = chat(gw.url, "counted", max_wait=0)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert used() == 0                       # the quota it got was given back whole
        assert counted.provider_config.concurrency == 1

        assert store.gw_take(T, "other-gateway", 1, 60)
        got: list[httpx.Response] = []
        waiter = threading.Thread(target=lambda: got.append(chat(gw.url, "fast", 20)))
        waiter.start()
        demand = f"{cluster.namespace}:gw:demand:*"
        Cluster.wait_for(lambda: list(cluster.r.scan_iter(demand)), 10,
                         "the request to wait and claim the target ahead of batch jobs")
        time.sleep(0.3)                          # it keeps waiting while the slot is held
        assert not got
        store.gw_free([(T, "other-gateway")], [])
        waiter.join(30)
        assert got[0].status_code == 200
        # q/m2 was free all along: a short wait for the preferred target beats it
        assert got[0].headers["x-dispatch-target"] == T
        assert cluster.stats()["targets"]["q/m2"]["received"] == 0


def test_a_slot_is_given_back_when_quota_refuses(tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path, concurrency=1)
    with Cluster(cfg, tmp_path) as cluster, GatewayServer(cfg) as gw:
        assert chat(gw.url, "tight").status_code == 200      # its 1 request/minute
        r = chat(gw.url, "tight", max_wait=0)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 30
        Cluster.wait_for(lambda: no_slot_left(cluster, "p/tight"), 10,
                         "the slot taken with the refused reservation to be given back")


def test_a_slot_is_given_back_on_upstream_errors_and_client_disconnects(
        tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path, concurrency=1)
    with Cluster(cfg, tmp_path) as cluster, GatewayServer(cfg) as gw:
        cluster.sim.inject("p", "400", model="m1")
        assert chat(gw.url, "solo", max_wait=0).status_code == 400
        # the only slot is free again at once (no waiting allowed: a leak would be a 429)
        assert chat(gw.url, "solo", max_wait=0).status_code == 200
        cluster.sim.inject("p", "500", count=2, model="m1")  # retried once, then given up
        assert chat(gw.url, "solo", max_wait=0).status_code == 502
        assert chat(gw.url, "solo", max_wait=0).status_code == 200

        # the client goes away after the first chunk
        with httpx.stream("POST", f"{gw.url}/v1/chat/completions", timeout=30,
                          json={"model": "solo", "messages": HELLO, "stream": True},
                          headers={"X-Dispatch-Max-Wait": "0"}) as s:
            assert s.status_code == 200
            next(s.iter_lines())
        Cluster.wait_for(lambda: no_slot_left(cluster), 10, "the streamed call's slot back")
        assert chat(gw.url, "solo", max_wait=0).status_code == 200

        # the chunk callback itself fails mid-stream (a gone client surfacing as an error)
        from dispatcher.gateway import engine

        def gone(target: str, chunk: dict) -> None:
            raise ConnectionResetError("the client went away")

        spec = JobSpec(line=0, custom_id="chat", tag="solo", pinned=None,
                       body={"messages": HELLO, "max_tokens": 4}, targets=[T])
        with pytest.raises(ConnectionResetError):
            engine.step(gw.gw, spec, set(), True, gone)
        gw.gw.rt.slots.settle(T)
        Cluster.wait_for(lambda: no_slot_left(cluster), 10, "the failed call's slot back")
        assert cluster.stats()["targets"][T]["max_in_flight"] == 1


@pytest.mark.parametrize("single_connection", [False, True])
def test_the_slot_rides_with_the_reservation_in_one_round_trip(
        tmp_path: Path, single_connection: bool) -> None:
    from dispatcher.config import load_config
    from workers.quota.costs import Cost
    from workers.quota.engine import QuotaEngine

    cfg = load_config(gateway_config(tmp_path, concurrency=1), simulate=True)
    r = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True,
                             single_connection_client=single_connection)
    ns = "tq" + uuid.uuid4().hex[:8]
    try:
        store, quota = JobStore(r, ns), QuotaEngine(r, cfg, namespace=ns, simulated=True)
        target = cfg.target("p/tight")                 # 1 request/minute
        # a server that lost both scripts (restart, failover): each is loaded and run again
        store._gwtake.sha = quota._scripts["reserve"].sha = "0" * 40
        res, took = quota.reserve_along(target, Cost(1, 0, 0),
                                        store.gw_take_call("p/tight", "a", 1, 60))
        assert res.granted and took == 1
        assert store._gwtake.sha != "0" * 40 and quota._scripts["reserve"].sha != "0" * 40
        # the mixed answers come back side by side: quota refused, slot taken ...
        writes: list[int] = []
        many = quota._evalsha_many
        quota._evalsha_many = lambda calls: writes.append(len(calls)) or many(calls)
        quota._evalsha = None                           # no command of its own: one write
        res, took = quota.reserve_along(target, Cost(1, 0, 0),
                                        store.gw_take_call("p/tight", "b", 2, 60))
        assert not res.granted and res.wait_s > 30 and took == 1
        assert writes == [2]
        # ... and slot refused while the cost can never fit: nothing is sent at all
        res, took = quota.reserve_along(target, Cost(2, 0, 0),
                                        store.gw_take_call("p/tight", "c", 2, 60))
        assert res.never and took is None
        assert r.zrange(store.gwcalling_key("p/tight"), 0, -1) == ["a", "b"]
    finally:
        for key in r.scan_iter(f"{ns}*", count=1000):
            r.delete(key)
        r.close()


def test_the_pump_counts_a_started_job_once_as_the_scripts_do(store) -> None:
    """A job handed out and started is in ``queued:T`` and ``calling:T``: one slot, not two
    (counted twice, a target ran at half its concurrency once chains ended)."""
    now = server_time(store.r)
    store.r.zadd(store.queued_key(T), {"b:0": now, "b:1": now, "b:2": now})
    store.r.zadd(store.calling_key(T), {"b:0": now, "b:1": now})
    assert store.gw_take(T, "g", 60, 60)
    pipe = store.r.pipeline()
    store.read_occupancy(pipe, T)
    handed_out, used = store.occupancy_of(pipe.execute())
    assert (handed_out, used) == (3, 4)            # b:0, b:1 started, b:2 not; g calling
    # the same total the hand-out script judges by: 4 busy, so a 5th fits only under 5
    assert not store.gw_take(T, "h", 4, 60) and store.gw_take(T, "h", 5, 60)
