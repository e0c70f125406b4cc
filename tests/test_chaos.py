"""A short chaos run (see tests/chaos.py): 2 routers + 3 provider workers on their own
Redis, random upstream faults, three workers SIGKILLed and restarted, one Redis restart.
Fixed seeds and kill points set by progress, not by the clock; no wall-clock assertion."""

from __future__ import annotations

import shutil

import pytest

from tests.chaos import ChaosRun


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_every_job_ends_exactly_once_through_kills_faults_and_a_redis_restart(tmp_path):
    run = ChaosRun(tmp_path, jobs=200, seed=11, lease_s=3.0, renew_s=1.0,
                   handout_timeout_s=8.0, kill_every=None, kill_at_done=(30, 90, 140),
                   restart_redis_at_done=60, timeout_s=300)
    got = run.run()
    assert got["finished"], got
    assert got["lost"] == 0 and got["ended_twice"] == 0, got
    assert got["completed"] + got["failed"] == 200, got
    assert got["over_limit"] == 0, got
    assert got["kills"] == 3 and got["kills_not_recovered"] == 0, got
    assert got["faults_injected"] > 0, "no fault was injected: this tested nothing"
    assert got["redis_restart"] == "SHUTDOWN"
