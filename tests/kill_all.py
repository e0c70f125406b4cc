"""The "every worker SIGKILLed mid-batch" scenario (issue #11), shared by
``tests/test_kill_all.py`` (short leases) and ``bench/bench_kill_all.py`` (defaults).

A cluster started the documented way (``dispatch worker``, ``dispatch worker --provider
pa``, ``dispatch worker --provider pb``) on the real simulator, a batch submitted with
``dispatch submit``, every worker process SIGKILLed mid-batch and started again at once.
It uses only what ``tests/cluster.py`` had before leases, so it also runs on older code
(the "before" figure).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cluster import ROOT, Cluster, job_line, model, provider, write_config


def kill_all_config(directory: Path, settings: dict | None = None) -> Path:
    limits = [{"unit": "requests", "limit": 6, "per": "second"}]
    return write_config(
        directory,
        {"pa": provider(model("m1", limits=limits), concurrency=4),
         "pb": provider(model("m1", limits=limits), concurrency=4)},
        {"t": ["pa/m1", "pb/m1"]},
        settings,
    )


def _start_cluster(c: Cluster) -> list:
    return [c.start_worker(name="router"),
            c.start_worker("--provider", "pa", name="pa"),
            c.start_worker("--provider", "pb", name="pb")]


def run_kill_all(c: Cluster, n_jobs: int = 150, kill_at: int = 40,
                 timeout_s: float = 120.0) -> dict:
    """Run the scenario on cluster ``c``; returns its figures (never asserts)."""
    procs = _start_cluster(c)
    path = c.tmp / "kill_all.jsonl"
    path.write_text("".join(job_line(f"j{i}", "t") + "\n" for i in range(n_jobs)))
    out = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "submit", str(path), "--simulate"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "DISPATCH_NAMESPACE": c.namespace,
             "DISPATCH_CONFIG": str(c.config_dir)})
    assert out.returncode == 0, out.stderr
    batch = out.stdout.strip().splitlines()[-1]
    end = time.monotonic() + 60
    while c.batch(batch).get("completed", 0) < kill_at and time.monotonic() < end:
        time.sleep(0.02)
    for proc in procs:
        os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait()
    at_kill = c.batch(batch)
    _start_cluster(c)
    restarted = time.monotonic()
    last_change, seen = restarted, (at_kill["completed"], at_kill["failed"])
    end = restarted + timeout_s
    while time.monotonic() < end:
        info = c.batch(batch)
        now = (info["completed"], info["failed"])
        if now != seen:
            seen, last_change = now, time.monotonic()
        if sum(now) >= n_jobs:
            break
        time.sleep(0.05)
    info = c.batch(batch)
    states: dict[str, int] = {}
    for i in range(n_jobs):
        state = c.r.hget(f"{c.namespace}:j:{{{batch}}}:{i}", "state") or "missing"
        states[state] = states.get(state, 0) + 1
    totals = c.stats()["totals"]
    return {
        "jobs": n_jobs,
        "completed_at_kill": at_kill["completed"],
        "completed": info["completed"],
        "failed": info["failed"],
        "not_done": n_jobs - info["completed"] - info["failed"],
        "states": states,
        # each job's result is written once: the batch's counters equal the ended jobs
        "ended_twice": info["completed"] + info["failed"] - sum(
            n for s, n in states.items() if s in ("completed", "failed", "expired",
                                                  "cancelled")),
        "upstream_ok_calls": totals["ok"],
        "over_limit": totals["over_limit"],
        "restart_to_last_result_s": round(last_change - restarted, 1),
        "finished": sum(seen) >= n_jobs,
        "waited_s": timeout_s,
    }
