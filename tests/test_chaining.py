"""A call task goes on with its target's backlog: atomic hand-over in the job store (real
Redis), and end to end through real Celery workers and the real simulator."""

from __future__ import annotations

import ast
import re
import uuid

import pytest
import redis

from dispatcher.batchfile import JobSpec
from tests.cluster import TEST_REDIS_URL, Cluster, job_line, model, provider, write_config
from workers.jobstore import waitset_sig
from workers.usage import load_usage, utc_day


def spec(custom_id: str, tag: str, targets: list[str]) -> JobSpec:
    """A validated job as ``parse_batch`` makes it."""
    return JobSpec(line=0, custom_id=custom_id, tag=tag, pinned=None,
                   body={"messages": [{"role": "user", "content": custom_id}]}, targets=targets)


def test_next_job_takes_the_fairest_head_of_first_choice_sets_only(store):
    # two batches on the set that prefers A, one on a set where A is only the fallback
    first, _ = store.create_batch([spec("f0", "fast", ["A", "B"]), spec("f1", "fast", ["A", "B"])],
                                  simulated=True, deadline_s=60)
    second, _ = store.create_batch([spec("s0", "fast", ["A", "B"])], simulated=True, deadline_s=60)
    store.create_batch([spec("o0", "bulk", ["B", "A"])], simulated=True, deadline_s=60)
    prefer_a = [waitset_sig("fast", ["A", "B"])]
    store.r.zadd(store.calling_key("A"), {"prev:0": 1})

    taken = []
    for _ in range(4):
        job, status = store.next_job("prev:0" if not taken else taken[-1], "A", prefer_a,
                                     ["wake-me"])
        if job is None:
            break
        assert status == "in_progress" and job.state == "running"
        assert store.r.hget(store.job_key(job.id), "target") == "A"
        # the slot is carried over: exactly one job of A is in a call at any time
        assert store.r.zrange(store.calling_key("A"), 0, -1) == [job.id]
        taken.append(job.id)
    # fair order: the k-th job of every batch before the (k+1)-th of any; "o0" is never taken
    assert [store.load(j).custom_id for j in taken] == ["f0", "s0", "f1"]
    # nothing left: the slot is given back and the sets A may serve are woken
    assert store.r.zcard(store.calling_key("A")) == 0
    assert store.r.lrange(store.wake_key, 0, -1)[-1] == "wake-me"
    assert store.r.zcard(store.wait_key(waitset_sig("bulk", ["B", "A"]))) == 1


def test_a_job_taken_by_a_call_task_is_never_handed_out_again(store):
    batch, (sig,) = store.create_batch([spec("j0", "fast", ["A"])], simulated=True,
                                       deadline_s=60)
    job = store.load(f"{batch}:0")
    taken, _ = store.next_job("prev:0", "A", [sig], [])
    assert taken is not None and taken.id == job.id
    # the pump read the same head a moment before: its hand-out must now fail
    assert store.handout(job, "A", store.wait_key(sig)) == 0
    assert store.r.zcard(store.queued_key("A")) == 0
    assert store.r.hget(store.job_key(job.id), "state") == "running"


def test_handout_moves_a_waiting_job_once(store):
    batch, (sig,) = store.create_batch([spec("j0", "fast", ["A"])], simulated=True,
                                       deadline_s=60)
    job = store.load(f"{batch}:0")
    assert store.handout(job, "A", store.wait_key(sig)) == 1  # the hand-out's ticket
    assert store.handout(job, "A", store.wait_key(sig)) == 0
    assert store.r.zrange(store.queued_key("A"), 0, -1) == [job.id]
    assert store.r.hget(store.job_key(job.id), "state") == "dispatched"


def start(store, batch: str, sig: str):
    """Hand job 0 out and start it as its call task would."""
    ticket = store.handout(store.load(f"{batch}:0"), "A", store.wait_key(sig), "me")
    got = store.start(f"{batch}:0", "A", "me", ticket)
    assert got[2], "the call task of the latest hand-out claims its job"
    return got


def call_task_results(log: str, batch: str) -> list[dict]:
    """The return values of this batch's ``dispatch.call`` tasks, from the worker's log
    (Celery logs every success with its value; call tasks keep no result-store entry)."""
    out = []
    for line in log.splitlines():
        m = re.search(r"dispatch\.call\[[^\]]+\] succeeded in [\d.e-]+s: (\{.*\})$", line)
        if m:
            result = ast.literal_eval(m.group(1))
            if str(result.get("job", "")).startswith(batch + ":") and "target" in result:
                out.append(result)
    return out


def _all_logged(tasks: list[dict], n: int) -> list[dict] | None:
    return tasks if sum(t.get("served", 1) for t in tasks) >= n else None


@pytest.mark.parametrize("chain_max_jobs", [100, 1])
def test_backlog_is_served_by_chained_call_tasks_exactly_once(tmp_path, chain_max_jobs):
    cfg = write_config(tmp_path / "config", {"alpha": provider(model("a1"), concurrency=2)},
                       {"fast": ["alpha/a1"]},
                       {"routing": {"preference_delay_s": 2.0, "horizon_s": 1.0,
                                    "chain_max_jobs": chain_max_jobs}})
    with Cluster(cfg, tmp_path) as c:
        c.start_worker("--all")
        batch = c.submit([job_line(f"j{i}", "fast") for i in range(40)])
        results = c.wait(batch, timeout=90)
        assert [r["custom_id"] for r in results] == [f"j{i}" for i in range(40)]
        assert all(r["response"]["status_code"] == 200 for r in results)
        assert c.stats()["totals"]["ok"] == 40  # no job was called twice
        # A call task logs its return value AFTER its last job's result is stored: wait for
        # the log lines (reading them at once lost a 20-job chain's line: "20 == 40").
        tasks = c.wait_for(lambda: _all_logged(call_task_results(c.log("w0"), batch), 40),
                           timeout=30, what="every call task's 'succeeded' log line")
        # each call's usage rides with its job's result: counted once per call, none lost
        day = load_usage(c.r, c.namespace, [utc_day()], simulated=True)[utc_day()]
        assert (day["alpha/a1"].requests, day["alpha/a1"].ok) == (40, 40)
        assert day["alpha/a1"].prompt_tokens > 0
    served = [t.get("served", 1) for t in tasks]
    assert sum(served) == 40
    if chain_max_jobs == 1:
        assert len(tasks) == 40 and max(served) == 1
    else:  # two slots, a backlog: a handful of call tasks serve everything
        assert len(tasks) <= 10 and max(served) > 1


def test_a_script_redis_knows_runs_once_when_the_other_was_lost(store):
    """After a restart one process may have reloaded ``next`` but not ``finish``: the
    finish is retried alone; the next job is taken once, not twice."""
    batch, (sig,) = store.create_batch([spec(f"j{i}", "fast", ["A"]) for i in range(3)],
                                       simulated=True, deadline_s=60)
    job, _, _ = start(store, batch, sig)
    store.r.script_flush()
    store.r.script_load(store._next.script)  # as another process's next_job would
    nxt, _ = store.finish_and_next(job, {"ok": True}, "A", "A", [sig], [], take=True,
                                   holder="me")
    assert store.load(job.id).state == "completed"
    assert nxt is not None and nxt.custom_id == "j1"
    assert store.r.zrange(store.calling_key("A"), 0, -1) == [nxt.id]  # one slot, one job
    assert store.r.zcard(store.wait_key(sig)) == 1  # j2 still waiting


def test_finish_and_next_survive_a_lost_script_cache(store):
    batch, (sig,) = store.create_batch([spec("j0", "fast", ["A"]), spec("j1", "fast", ["A"])],
                                       simulated=True, deadline_s=60)
    job, _, _ = start(store, batch, sig)
    store.r.script_flush()  # as after a Redis restart
    nxt, status = store.finish_and_next(job, {"ok": True}, "A", "A", [sig], [], take=True,
                                        holder="me")
    assert store.load(job.id).state == "completed"
    assert nxt is not None and nxt.custom_id == "j1" and status == "in_progress"
    assert int(store.batch(batch)["completed"]) == 1  # finished once, not twice


def test_a_chain_stops_at_its_job_and_time_caps_and_on_shutdown(monkeypatch):
    from types import SimpleNamespace

    from celery.worker import state

    from workers.caller import Caller

    routing = SimpleNamespace(chain_max_jobs=3, chain_max_s=30.0)
    caller = Caller(SimpleNamespace(config=SimpleNamespace(
        settings=SimpleNamespace(routing=routing))))
    caller._served = 2
    assert caller._may_chain()              # the third job may still be taken
    caller._served = 3
    assert not caller._may_chain()          # three served: the task ends
    caller._served = 1
    caller._started -= 31
    assert not caller._may_chain()          # past chain_max_s
    caller._started += 31
    monkeypatch.setattr(state, "should_stop", 0)  # a warm shutdown (exit code 0)
    assert not caller._may_chain()


def test_a_call_task_that_fails_mid_chain_puts_its_job_back(tmp_path, monkeypatch):
    from dispatcher.config import load_config
    from workers.caller import Caller
    from workers.runtime import Runtime

    cfg = load_config(write_config(tmp_path / "c", {"alpha": provider(model("a1"))},
                                   {"fast": ["alpha/a1"]}), simulate=True)
    r = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    rt = Runtime(cfg, r, "tc" + uuid.uuid4().hex[:8])
    try:
        batch, (sig,) = rt.store.create_batch([spec(f"j{i}", "fast", ["alpha/a1"])
                                               for i in range(3)], simulated=True, deadline_s=60)
        served = []

        def run(self, job, target_key):  # the first job completes, the second one crashes
            if served:
                raise RuntimeError("worker bug")
            served.append(job.id)
            self._carry(self.rt.store.finish_and_next(
                job, {"ok": True}, "alpha", target_key, [sig], [sig], take=True,
                holder=self._me))
            return {"job": job.id, "status": "completed"}

        monkeypatch.setattr(Caller, "_run", run)
        ticket = rt.store.handout(rt.store.load(f"{batch}:0"), "alpha/a1",
                                  rt.store.wait_key(sig), "pump")  # as the pump does
        with pytest.raises(RuntimeError):
            Caller(rt).run(f"{batch}:0", "alpha/a1", ticket)
        crashed = rt.store.load(f"{batch}:1")
        assert crashed.state == "waiting"  # back in line, not stranded as "running"
        assert r.zrange(rt.store.wait_key(sig), 0, -1) == [f"{batch}:1", f"{batch}:2"]
        assert r.zcard(rt.store.calling_key("alpha/a1")) == 0
        assert r.hget(rt.store.job_key(f"{batch}:1"), "crashes") == "1"
    finally:
        for key in r.scan_iter(f"{rt.namespace}*", count=1000):
            r.delete(key)
