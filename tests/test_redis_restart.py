"""Redis restarts mid-batch (its own redis-server with AOF on a spare port): nothing is lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import redis

from dispatcher.local import stop_process_groups
from tests.chaos import OwnRedis
from tests.cluster import ROOT, job_line, model, provider, write_config


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_batch_finishes_exactly_once_across_a_redis_restart(tmp_path):
    from dispatcher.config import load_config
    from workers.simulator import Simulator

    server = OwnRedis(tmp_path / "redis")  # a spare port: other suites may run at once
    server.start()
    cfg = write_config(tmp_path / "config",
                       {"alpha": provider(model("a1", limits=[
                           {"unit": "requests", "limit": 8, "per": "second"}]))},
                       {"bulk": ["alpha/a1"]},
                       {"routing": {"preference_delay_s": 1.0, "horizon_s": 1.0}})
    sim = Simulator(load_config(cfg, simulate=True), latency=(0.05, 0.15)).start()
    ns = "rr" + uuid.uuid4().hex[:6]
    env = {**os.environ, "REDIS_URL": server.url, "DISPATCH_NAMESPACE": ns,
           "DISPATCH_CONFIG": str(cfg), "DISPATCH_SIMULATOR_URL": sim.url,
           "DISPATCH_VISIBILITY_TIMEOUT": "10"}
    log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115 - the worker owns it
    worker = subprocess.Popen([sys.executable, "-m", "dispatcher.cli", "worker", "--all"],
                              stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                              start_new_session=True)
    try:
        batch_file = tmp_path / "b.jsonl"
        batch_file.write_text("\n".join(job_line(f"j{i}", "bulk") for i in range(60)) + "\n")
        sub = subprocess.run([sys.executable, "-m", "dispatcher.cli", "submit", str(batch_file),
                              "--simulate"], env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
        assert sub.returncode == 0, sub.stderr
        batch = sub.stdout.strip()
        r = redis.Redis(port=server.port, decode_responses=True)
        key = f"{ns}:b:{{{batch}}}"
        deadline = time.monotonic() + 30
        while int(r.hget(key, "completed") or 0) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.restart()  # SHUTDOWN: a graceful restart, AOF flushed, connections dropped
        r = redis.Redis(port=server.port, decode_responses=True)
        assert int(r.hget(key, "completed") or 0) < 60, "finished before the restart"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = int(r.hget(key, "completed") or 0) + int(r.hget(key, "failed") or 0)
            if done >= 60:
                break
            time.sleep(0.2)
        info = r.hgetall(key)
        assert int(info["completed"]) == 60 and int(info.get("failed", 0)) == 0, (
            info, (tmp_path / "worker.log").read_text()[-3000:])
        states = [r.hget(f"{ns}:j:{{{batch}}}:{i}", "state") for i in range(60)]
        assert states == ["completed"] * 60
        assert sim.stats()["totals"]["over_limit"] == 0
    finally:
        stop_process_groups([worker])
        sim.stop()
        server.stop()
