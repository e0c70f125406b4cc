"""Every worker process SIGKILLed mid-batch and started again at once: all jobs are
served, each exactly once, none over a limit, without waiting for Celery's visibility
timeout (600 s here). On the code before worker leases, most of the batch stayed stuck
for 11 minutes."""

from __future__ import annotations

from tests.cluster import Cluster
from tests.kill_all import kill_all_config, run_kill_all


def test_every_worker_killed_mid_batch_loses_and_doubles_nothing(tmp_path):
    cfg = kill_all_config(tmp_path / "config",
                          {"reliability": {"lease_s": 3.0, "lease_renew_s": 1.0}})
    with Cluster(cfg, tmp_path, latency=(0.3, 0.8), visibility_timeout=600) as c:
        got = run_kill_all(c, n_jobs=150, kill_at=40, timeout_s=120)
    assert got["completed_at_kill"] < 150, f"nothing was in flight at the kill: {got}"
    assert got["finished"], f"jobs stuck after the restart: {got}"
    assert (got["completed"], got["failed"]) == (150, 0), got
    assert got["states"] == {"completed": 150}, got
    assert got["ended_twice"] == 0, got
    assert got["over_limit"] == 0, got
