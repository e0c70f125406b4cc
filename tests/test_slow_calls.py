"""A call longer than the broker's visibility timeout is never started a second time while
the first is alive: the broker redelivers its message, and the lease decides (the job is
held by a live worker, so the copy does nothing)."""

from __future__ import annotations

from tests.cluster import Cluster, job_line, model, provider, write_config


def test_a_call_outliving_the_visibility_timeout_runs_once(tmp_path):
    cfg = write_config(tmp_path / "config",
                       {"alpha": provider(model("a1"), concurrency=4, timeout_s=30)},
                       {"fast": ["alpha/a1"]},
                       {"routing": {"chain_max_jobs": 1},
                        # the sweep checks a running job against its worker's lease after
                        # a renewal period: the calls outlive that many times over
                        "reliability": {"lease_s": 3.0, "lease_renew_s": 1.0}})
    # every call takes 6-7 s; the broker redelivers unacknowledged messages after 2 s, and
    # two jobs leave free slots, so the copies arrive while the first calls still run
    with Cluster(cfg, tmp_path, latency=(6.0, 7.0), visibility_timeout=2) as c:
        c.start_worker("--all")
        batch = c.submit([job_line(f"s{i}", "fast") for i in range(2)])
        results = c.wait(batch, timeout=90)
        assert all(r["response"]["status_code"] == 200 for r in results)
        assert c.stats()["totals"]["received"] == 2  # each job reached the upstream once
        for i in range(2):
            assert c.r.hget(f"{c.namespace}:j:{{{batch}}}:{i}", "tries") == "1"
        # a copy was delivered while its job was running (otherwise this tests nothing)
        assert "'status': 'stale message', 'state': 'running'" in c.log("w0")
