"""``dispatch plan`` on the real Redis: used quota, the backlog ahead, JSON, errors.

The backlog is a real batch in the job store (no workers: it stays queued) and the used
quota is real reservations through the quota engine. The plan must read both and change
neither.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import pytest
import redis
from typer.testing import CliRunner

from dispatcher.batchfile import parse_batch
from dispatcher.cli import app
from dispatcher.config import load_config
from tests.cluster import ROOT, TEST_REDIS_URL, Cluster, job_line, model, provider, write_config
from workers.jobstore import JobStore
from workers.quota.costs import Cost
from workers.quota.engine import QuotaEngine


@pytest.fixture
def world(tmp_path, monkeypatch):
    ns = "tf" + uuid.uuid4().hex[:8]
    cfg_dir = write_config(
        tmp_path / "cfg",
        {"a": provider(model("m", limits=[{"unit": "requests", "limit": 20, "per": "day"}]),
                       timezone="+05:47"),
         "b": provider(model("m", limits=[{"unit": "requests", "limit": 10, "per": "minute"}]))},
        {"fast": ["a/m", "b/m"]},
        settings={"forecast": {"latency_s": 1.0}},
    )
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("DISPATCH_NAMESPACE", ns)
    monkeypatch.delenv("DISPATCH_CONFIG", raising=False)
    r = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    batch = tmp_path / "in.jsonl"
    batch.write_text("\n".join(job_line(f"n{i}", "fast") for i in range(30)) + "\n")
    yield r, ns, cfg_dir, batch
    for key in r.scan_iter(f"{ns}*", count=1000):
        r.delete(key)
    from workers.runtime import reset_runtime

    reset_runtime()
    os.environ.pop("DISPATCH_CONFIG", None)


def _plan(cfg_dir, batch, *args):
    return CliRunner().invoke(app, ["plan", str(batch), "--simulate", "--json",
                                    "--config", str(cfg_dir), *args])


def _state(r, ns):
    return sorted((k, r.type(k), r.dump(k)) for k in r.scan_iter(f"{ns}*", count=1000))


def test_plan_reads_used_quota_and_backlog_and_changes_nothing(world):
    r, ns, cfg_dir, batch = world
    cfg = load_config(cfg_dir, simulate=True)
    engine = QuotaEngine(r, cfg, namespace=ns, simulated=True)
    a = cfg.target("a/m")
    for _ in range(15):
        assert engine.reserve(a, Cost(1, 10)).granted
    first = _plan(cfg_dir, batch)
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    # 5 requests left on a today, the other 25 go to b at 10 a minute.
    assert doc["targets"] == {"b/m": 25, "a/m": 5}
    assert doc["ahead"] == 0 and doc["simulated"] is True
    assert doc["binding"][0]["limit"] == "b/m: 10 requests/minute"
    assert 120 < doc["duration_s"] < 190  # three waves on b: now, +1 window, +2 windows

    store = JobStore(r, ns)
    old = parse_batch([job_line(f"o{i}", "fast") for i in range(20)], cfg)
    store.create_batch(old, simulated=True, deadline_s=3600)
    before = _state(r, ns)
    second = json.loads(_plan(cfg_dir, batch).stdout)
    assert second["ahead"] > 0 and second["finish_at"] > doc["finish_at"]
    high = json.loads(_plan(cfg_dir, batch, "--priority", "high").stdout)
    assert high["ahead"] < second["ahead"] and high["finish_at"] < second["finish_at"]
    assert _state(r, ns) == before  # read only: no counter, no job moved


def test_live_plan_ignores_the_simulated_backlog(world):
    r, ns, cfg_dir, batch = world
    cfg = load_config(cfg_dir, simulate=True)
    JobStore(r, ns).create_batch(parse_batch([job_line("o", "fast")] * 1, cfg),
                                 simulated=True, deadline_s=3600)
    out = CliRunner().invoke(app, ["plan", str(batch), "--json", "--config", str(cfg_dir)],
                             env={"TEST_UNUSED_KEY": "x"})
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["ahead"] == 0


def test_deadline_warning_and_the_reset_in_the_provider_zone(world):
    r, ns, cfg_dir, batch = world
    cfg_b = cfg_dir.parent / "cfg2"
    write_config(cfg_b,
                 {"a": provider(model("m", limits=[{"unit": "requests", "limit": 20,
                                                    "per": "day"}]), timezone="+05:47")},
                 {"fast": ["a/m"]}, settings={"forecast": {"latency_s": 1.0}})
    out = CliRunner().invoke(app, ["plan", str(batch), "--simulate", "--config", str(cfg_b),
                                   "--deadline", "1h"])
    assert out.exit_code == 0, out.output
    assert "20 of 30 jobs by" in out.output
    assert "reset at 00:00 +05:47" in out.output
    assert "warning" in out.stderr and "misses the deadline" in out.stderr
    ok = CliRunner().invoke(app, ["plan", str(batch), "--simulate", "--config", str(cfg_dir),
                                  "--deadline", "2099-01-01T00:00+00:00"])
    assert ok.exit_code == 0 and "meets the deadline" in ok.stdout and not ok.stderr
    doc = json.loads(_plan(cfg_b, batch, "--deadline", "1h").stdout)
    assert doc["by_deadline"] == 20 and doc["meets_deadline"] is False
    reset = datetime.fromtimestamp(doc["resets"][0]["at"], UTC)
    assert (reset.hour, reset.minute) == (18, 13)


def test_bad_input_is_refused_with_exit_2(world):
    r, ns, cfg_dir, batch = world
    bad = batch.parent / "bad.jsonl"
    bad.write_text(job_line("x", "fast") + "\n{not json\n")
    out = _plan(cfg_dir, bad)
    assert out.exit_code == 2 and "line 2" in out.stderr
    out = _plan(cfg_dir, batch, "--priority", "urgent")
    assert out.exit_code == 2 and "high, normal, low" in out.stderr
    out = _plan(cfg_dir, batch, "--deadline", "soon")
    assert out.exit_code == 2 and "--deadline" in out.stderr
    for cmd in (["submit", str(batch)], ["run", str(batch), "-o", str(bad)]):
        out = CliRunner().invoke(app, [*cmd, "--priority", "top", "--config", str(cfg_dir)])
        assert out.exit_code == 2 and "high, normal, low" in out.stderr


def test_submit_prints_a_forecast_and_status_shows_the_eta(tmp_path):
    """A real cluster: the line on stderr at submit, then an ETA in `dispatch status` while
    the batch waits for its rate limit; the ETA agrees with the forecast."""
    cfg = write_config(
        tmp_path / "cfg",
        {"a": provider(model("m", limits=[{"unit": "requests", "limit": 4, "per": "minute"}]))},
        {"fast": ["a/m"]}, settings={"forecast": {"latency_s": 0.2}})
    batch_file = tmp_path / "b.jsonl"
    batch_file.write_text("\n".join(job_line(f"q{i}", "fast") for i in range(6)) + "\n")
    with Cluster(cfg, tmp_path) as c:
        c.start_worker("--all")
        env = {**os.environ, "REDIS_URL": TEST_REDIS_URL, "DISPATCH_NAMESPACE": c.namespace,
               "DISPATCH_CONFIG": str(cfg), "COLUMNS": "200"}

        def dispatch(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "dispatcher.cli", *args],
                                  capture_output=True, text=True, env=env, timeout=120,
                                  cwd=ROOT)

        sub = dispatch("submit", str(batch_file), "--simulate")
        assert sub.returncode == 0, sub.stderr
        assert "forecast:" in sub.stderr and "done about" in sub.stderr
        assert "bound by a/m: 4 requests/minute" in sub.stderr
        batch = sub.stdout.strip()
        end = time.monotonic() + 30
        while c.batch(batch).get("completed", 0) < 4 and time.monotonic() < end:
            time.sleep(0.1)
        status = dispatch("status", batch)
        assert status.returncode == 0, status.stderr
        assert "eta" in status.stdout and "UTC" in status.stdout.split("eta", 1)[1]
        assert dispatch("cancel", batch).returncode == 0


def test_the_submit_line_is_skipped_for_a_huge_queue(world, monkeypatch):
    import dispatcher.forecast_state as fs
    from workers.runtime import reset_runtime

    r, ns, cfg_dir, batch = world
    monkeypatch.setenv("DISPATCH_CONFIG", str(cfg_dir))
    reset_runtime()
    cfg = load_config(cfg_dir, simulate=True)
    specs = parse_batch(batch.read_text().splitlines(), cfg)
    assert fs.submit_line(cfg, specs, True).startswith("forecast: done about")
    # Calls take 1 s (forecast.latency_s): none ends within a 0.5 s deadline.
    late = fs.submit_line(cfg, specs, True, deadline_s=0.5)
    assert "0 of 30 jobs by" in late and "30 jobs would expire at the deadline" in late
    monkeypatch.setattr(fs, "INLINE_MAX_JOBS", 10)
    assert "skipped" in fs.submit_line(cfg, specs, True)
