"""Worker liveness leases, the sweep over every target, stale messages, poison jobs and
deadlines, on the real Redis job store (DB 3, a random namespace)."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from dispatcher.batchfile import JobSpec
from dispatcher.config import load_config
from tests.cluster import TEST_REDIS_URL, model, provider, write_config
from workers.liveness import Lease, lease_key, stop_all
from workers.runtime import Runtime

LEASE_S = 3.0


def spec(custom_id: str, tag: str, targets: list[str]) -> JobSpec:
    return JobSpec(line=0, custom_id=custom_id, tag=tag, pinned=None,
                   body={"messages": [{"role": "user", "content": custom_id}]}, targets=targets)


@pytest.fixture
def rt(tmp_path):
    cfg = load_config(write_config(
        tmp_path / "config",
        {"alpha": provider(model("a1")), "beta": provider(model("b1"))},
        {"fast": ["alpha/a1", "beta/b1"], "bulk": ["beta/b1", "alpha/a1"]},
        {"reliability": {"lease_s": LEASE_S, "lease_renew_s": 1.0, "handout_timeout_s": 20.0,
                         "max_crashes": 3}}), simulate=True)
    r = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    runtime = Runtime(cfg, r, "tl" + uuid.uuid4().hex[:8])
    yield runtime
    stop_all()
    for key in r.scan_iter(f"{runtime.namespace}*", count=1000):
        r.delete(key)


def alive(rt, holder: str) -> None:
    rt.r.set(lease_key(rt.namespace, holder), "{}", px=60_000)


def dead(rt, holder: str) -> None:
    rt.r.delete(lease_key(rt.namespace, holder))


def hand_out(rt, jid: str, target: str, holder: str) -> int:
    store = rt.store
    job = store.load(jid)
    return store.handout(job, target, store.wait_key(job.sig), holder)


def age(rt, key: str, jid: str, seconds: float) -> None:
    """Pretend the job entered ``key`` ``seconds`` ago."""
    rt.r.zadd(key, {jid: time.time() - seconds})


def sweep(rt) -> tuple[int, int, int]:
    from workers.pump import stale_after_s

    return rt.store.sweep([t.key for t in rt.config.targets()], rt.config.settings.reliability,
                          stale_after_s())


def test_a_lease_lives_while_renewed_and_is_given_up_on_a_clean_stop(rt):
    lease = Lease(rt.r, rt.namespace, lease_s=2.0, renew_s=0.5).start()
    try:
        assert 0 < rt.r.pttl(lease.key) <= 2000
        time.sleep(2.5)  # longer than the lease: only the renewals keep it
        assert rt.r.exists(lease.key)
    finally:
        lease.stop()
    assert not rt.r.exists(lease.key)


def test_lease_settings_are_checked():
    from pydantic import ValidationError

    from dispatcher.config.models import ReliabilitySettings

    with pytest.raises(ValidationError, match="at most half"):
        ReliabilitySettings(lease_s=4, lease_renew_s=3)


def test_the_sweep_covers_every_target_and_only_dead_holders(rt):
    """Running jobs on two targets of two waiting sets: a dead worker's come back on both;
    a live worker's stay."""
    from workers.releaser import sweep_once

    store = rt.store
    batch, _ = store.create_batch([spec("f0", "fast", ["alpha/a1", "beta/b1"]),
                                   spec("b0", "bulk", ["beta/b1", "alpha/a1"]),
                                   spec("f1", "fast", ["alpha/a1", "beta/b1"])],
                                  simulated=True, deadline_s=600)
    alive(rt, "live")
    for i, target, holder in [(0, "alpha/a1", "gone"), (1, "beta/b1", "gone"),
                              (2, "alpha/a1", "live")]:
        jid = f"{batch}:{i}"
        ticket = hand_out(rt, jid, target, holder)
        assert store.start(jid, target, holder, ticket)[2]
    assert sweep_once(rt)
    states = {store.load(f"{batch}:{i}").custom_id: store.load(f"{batch}:{i}").state
              for i in range(3)}
    assert states == {"f0": "waiting", "b0": "waiting", "f1": "running"}
    assert rt.r.zrange(store.calling_key("alpha/a1"), 0, -1) == [f"{batch}:2"]
    assert rt.r.zcard(store.calling_key("beta/b1")) == 0
    assert rt.r.zcard(store.queued_key("beta/b1")) == 0
    assert rt.r.hget(store.job_key(f"{batch}:0"), "crashes") == "1"
    assert not sweep_once(rt)  # nothing more to do


def test_a_handed_out_job_waits_for_its_call_task_then_comes_back(rt):
    store = rt.store
    batch, _ = store.create_batch([spec("j0", "fast", ["alpha/a1"]),
                                   spec("j1", "fast", ["alpha/a1"])],
                                  simulated=True, deadline_s=600)
    queued = store.queued_key("alpha/a1")
    alive(rt, "router")
    hand_out(rt, f"{batch}:0", "alpha/a1", "router")   # its router is alive
    hand_out(rt, f"{batch}:1", "alpha/a1", "submitter")  # its submitter exited
    assert sweep(rt) == (0, 0, 0)  # the messages are in the queue: give them the grace
    age(rt, queued, f"{batch}:1", LEASE_S + 1)
    assert sweep(rt) == (1, 0, 0)
    assert store.load(f"{batch}:1").state == "waiting"
    age(rt, queued, f"{batch}:0", 21)  # live holder, but no call task for too long: lost
    assert sweep(rt) == (1, 0, 0)
    assert store.load(f"{batch}:0").state == "waiting"
    assert rt.r.zcard(queued) == 0
    assert rt.r.hget(store.job_key(f"{batch}:0"), "crashes") is None  # not the job's fault


def test_only_the_latest_hand_out_starts_a_job(rt):
    """A message redelivered for a job that was put back, re-claimed, or served does nothing."""
    store = rt.store
    batch, _ = store.create_batch([spec("j0", "fast", ["alpha/a1"])], simulated=True,
                                  deadline_s=600)
    jid = f"{batch}:0"
    first = hand_out(rt, jid, "alpha/a1", "router")
    age(rt, store.queued_key("alpha/a1"), jid, 21)
    sweep(rt)  # lost, handed out again
    second = hand_out(rt, jid, "alpha/a1", "router")
    assert second > first
    assert store.start(jid, "alpha/a1", "w1", first)[2] is False  # the old message
    assert store.load(jid).state == "dispatched"
    job, _, claimed = store.start(jid, "alpha/a1", "w2", second)
    assert claimed and job.state == "running"
    # the broker redelivers the message while w2 is still calling (a slow call)
    assert store.start(jid, "alpha/a1", "w3", second)[2] is False
    assert rt.r.hget(store.job_key(jid), "holder") == "w2"
    assert rt.r.hget(store.job_key(jid), "tries") == "1"  # started once
    store.finish(job, "completed", {"ok": True})
    assert store.start(jid, "alpha/a1", "w3", second)[2] is False


def test_a_swept_workers_late_release_keeps_the_new_holders_slot(rt):
    store = rt.store
    batch, _ = store.create_batch([spec("j0", "fast", ["alpha/a1"])], simulated=True,
                                  deadline_s=600)
    jid = f"{batch}:0"
    store.start(jid, "alpha/a1", "slow", hand_out(rt, jid, "alpha/a1", "router"))
    sweep(rt)  # "slow" holds no lease: presumed dead
    alive(rt, "w2")
    store.start(jid, "alpha/a1", "w2", hand_out(rt, jid, "alpha/a1", "router"))
    store.release(jid, "alpha/a1", [], "slow")  # the presumed-dead task wakes up and ends
    assert rt.r.zrange(store.calling_key("alpha/a1"), 0, -1) == [jid]
    store.release(jid, "alpha/a1", [], "w2")
    assert rt.r.zcard(store.calling_key("alpha/a1")) == 0


def test_a_job_that_kills_its_worker_every_time_ends_as_internal_error(rt):
    store = rt.store
    batch, _ = store.create_batch([spec("j0", "fast", ["alpha/a1"])], simulated=True,
                                  deadline_s=600)
    jid = f"{batch}:0"
    for crash in range(1, 4):
        job, _, claimed = store.start(jid, "alpha/a1", f"w{crash}",
                                      hand_out(rt, jid, "alpha/a1", "router"))
        assert claimed
        assert sweep(rt) == ((0, 1, 0) if crash < 3 else (0, 0, 1))
    job = store.load(jid)
    assert job.state == "failed"
    assert job.result["error"]["code"] == "internal_error"
    assert "lease lapsed" in job.result["error"]["message"]
    assert job.result["dispatch"]["crashes"] == 3
    info = store.batch(batch)
    assert (info["failed"], info["status"]) == (1, "completed")


def test_a_call_task_that_keeps_crashing_ends_failed_with_a_redacted_reason(rt, monkeypatch):
    from workers.caller import Caller

    store = rt.store
    batch, _ = store.create_batch([spec("j0", "fast", ["alpha/a1"])], simulated=True,
                                  deadline_s=600)
    jid = f"{batch}:0"

    def run(self, job, target_key):
        raise ValueError("bad parse of gsk_" + "A" * 40)

    monkeypatch.setattr(Caller, "_run", run)
    for _ in range(3):
        assert store.load(jid).state == "waiting"
        with pytest.raises(ValueError):
            Caller(rt).run(jid, "alpha/a1", hand_out(rt, jid, "alpha/a1", "router"))
    job = store.load(jid)
    assert job.state == "failed" and job.result["error"]["code"] == "internal_error"
    message = job.result["error"]["message"]
    assert "ValueError: bad parse of" in message and "gsk_AAAA" not in message
    assert rt.r.zcard(store.calling_key("alpha/a1")) == 0
    assert rt.r.zcard(store.queued_key("alpha/a1")) == 0


def test_a_batch_past_its_deadline_ends_expired_wherever_its_jobs_wait(rt):
    store = rt.store
    # the first job of an older batch blocks the head of the set; ours wait behind it
    store.create_batch([spec("head", "fast", ["alpha/a1"])], simulated=True, deadline_s=600)
    batch, _ = store.create_batch([spec(f"j{i}", "fast", ["alpha/a1"]) for i in range(4)],
                                  simulated=True, deadline_s=0.5)
    job, _, _ = store.start(f"{batch}:0", "alpha/a1", "w",
                            hand_out(rt, f"{batch}:0", "alpha/a1", "r"))  # running
    hand_out(rt, f"{batch}:1", "alpha/a1", "r")  # handed out, not yet started
    assert store.expire_due() == 0  # not yet due
    time.sleep(0.6)
    assert store.expire_due() == 3
    states = [store.load(f"{batch}:{i}").state for i in range(4)]
    assert states == ["running", "expired", "expired", "expired"]
    assert store.load(f"{batch}:2").result["error"]["code"] == "expired"
    assert rt.r.zcard(store.queued_key("alpha/a1")) == 1  # only the running one
    store.finish(job, "completed", {"ok": True})  # the running call ends normally
    assert store.batch(batch)["status"] == "completed"
    rt.r.zadd(store.deadlines_key, {batch: time.time()})  # its re-check is due
    assert store.expire_due() == 0
    assert rt.r.zscore(store.deadlines_key, batch) is None  # forgotten once ended


def test_a_job_redis_could_not_take_back_is_given_back_once_it_answers(rt):
    """Redis restarted under a call task: the job could be neither finished nor put back,
    and its worker's lease lives on. The process keeps it and gives it back after the next
    lease renewal, unless someone else holds it by then."""
    store = rt.store
    batch, _ = store.create_batch([spec(f"j{i}", "fast", ["alpha/a1"]) for i in range(2)],
                                  simulated=True, deadline_s=600)
    mine, other = f"{batch}:0", f"{batch}:1"
    job, _, _ = store.start(mine, "alpha/a1", "me", hand_out(rt, mine, "alpha/a1", "r"))
    taken, _, _ = store.start(other, "alpha/a1", "me", hand_out(rt, other, "alpha/a1", "r"))
    store.put_back_later(job, "alpha/a1", "me")
    store.put_back_later(taken, "alpha/a1", "me")
    rt.r.hset(store.job_key(other), "holder", "someone-else")  # swept and re-claimed
    assert store.retry_orphans() == 0
    assert store.load(mine).state == "waiting"
    assert store.load(other).state == "running"  # not taken from its new holder
    assert rt.r.zrange(store.calling_key("alpha/a1"), 0, -1) == [other]


def test_a_running_job_its_live_worker_forgot_waits_again(rt):
    """A Redis crash (kill -9, appendfsync everysec) can lose a job's finish: it looks
    "running" under a live worker that no longer runs it. The worker's lease lists the
    jobs it really runs, so the sweep puts back the others (no crash counted)."""
    import json

    store = rt.store
    batch, _ = store.create_batch([spec(f"j{i}", "fast", ["alpha/a1"]) for i in range(2)],
                                  simulated=True, deadline_s=600)
    for i in range(2):
        jid = f"{batch}:{i}"
        store.start(jid, "alpha/a1", "w", hand_out(rt, jid, "alpha/a1", "r"))
    lease = json.dumps({"jobs": [f"{batch}:0"], "lease_ms": 60_000})
    rt.r.set(lease_key(rt.namespace, "w"), lease, px=60_000)  # renewed just now
    assert sweep(rt) == (0, 0, 0)  # claimed just now: the lease may not list it yet
    rt.r.set(lease_key(rt.namespace, "w"), lease, px=58_000)  # its last renewal: 2 s ago
    for i in range(2):  # claimed 0.5 s before that renewal: within the margin (1 period)
        age(rt, store.calling_key("alpha/a1"), f"{batch}:{i}", 2.5)
    assert sweep(rt) == (0, 0, 0)
    for i in range(2):  # claimed 1.5 s before it: the renewal would have listed them
        age(rt, store.calling_key("alpha/a1"), f"{batch}:{i}", 3.5)
    assert sweep(rt) == (0, 1, 0)
    assert store.load(f"{batch}:1").state == "waiting"
    assert store.load(f"{batch}:0").state == "running"  # listed: really running
    assert rt.r.hget(store.job_key(f"{batch}:1"), "crashes") is None


def test_a_lease_lists_the_jobs_its_process_runs(rt):
    import json

    lease = Lease(rt.r, rt.namespace, lease_s=2.0, renew_s=0.5)
    lease.hold("b:1")
    lease.hold("b:2")
    lease.hold("b:2")  # two tasks of this process on one job id (a put-back re-claimed)
    lease.drop("b:2")
    lease.drop("b:1")
    lease.renew()
    try:
        assert json.loads(rt.r.get(lease.key))["jobs"] == ["b:2"]
    finally:
        lease.stop()


def test_a_worker_holds_its_lease_from_its_start_and_gives_it_up_when_stopped(tmp_path):
    import json

    from dispatcher.local import stop_process_groups
    from tests.cluster import Cluster

    cfg = write_config(tmp_path / "config", {"alpha": provider(model("a1"))},
                       {"fast": ["alpha/a1"]},
                       {"reliability": {"lease_s": 3.0, "lease_renew_s": 1.0}})
    with Cluster(cfg, tmp_path) as c:
        proc = c.start_worker("--provider", "alpha")

        def lease():
            for key in c.r.scan_iter(f"{c.namespace}:lease:*"):
                if json.loads(c.r.get(key) or "{}").get("pid") == proc.pid:
                    return key
            return None

        key = c.wait_for(lease, timeout=60, what="the idle worker's lease")
        assert 0 < c.r.pttl(key) <= 3000
        stop_process_groups([proc])  # a clean stop gives the lease up at once
        assert not c.r.exists(key)
