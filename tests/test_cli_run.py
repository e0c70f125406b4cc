"""The batch CLI as a user runs it: real processes, real Redis, the real simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispatcher.embedded import pid_alive
from tests.cluster import ROOT, TEST_REDIS_URL, Cluster, job_line, model, provider, write_config


def dispatch(*args: str, env: dict | None = None, timeout: float = 120,
             cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispatcher.cli", *args], capture_output=True,
                          text=True, env=env or dict(os.environ), timeout=timeout, cwd=cwd)


def clean_env(tmp_path: Path, **extra: str) -> dict:
    """A fresh machine: no REDIS_URL, no keys, state kept in a temp directory."""
    env = {k: v for k, v in os.environ.items()
           if k != "REDIS_URL" and not k.startswith("DISPATCH_") and not k.endswith("_API_KEY")}
    env.update(DISPATCH_STATE_DIR=str(tmp_path / "state"), **extra)
    return env


def test_invalid_batch_exits_2_with_every_bad_line_and_sends_nothing(tmp_path):
    batch = tmp_path / "bad.jsonl"
    batch.write_text("\n".join([
        job_line("a", "fast"),
        "{not json",
        job_line("a", "fast"),
        job_line("c", "no-such-tag"),
    ]) + "\n")
    out = tmp_path / "out.jsonl"
    proc = dispatch("run", str(batch), "-o", str(out), "--simulate", env=clean_env(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert "line 2" in proc.stderr and "line 3" in proc.stderr and "line 4" in proc.stderr
    assert "duplicate" in proc.stderr
    assert not out.exists()
    assert not (tmp_path / "state").exists(), "nothing may start for an invalid batch"


def test_without_keys_and_without_simulate_the_batch_is_refused_with_a_hint(tmp_path):
    proc = dispatch("run", "examples/batch.jsonl", "-o", str(tmp_path / "o.jsonl"),
                    env=clean_env(tmp_path))
    assert proc.returncode == 2
    assert "GROQ_API_KEY" in proc.stderr and "--simulate" in proc.stderr


def test_run_on_a_fresh_machine_writes_every_result_in_order(tmp_path):
    out = tmp_path / "results.jsonl"
    proc = dispatch("run", "examples/batch.jsonl", "-o", str(out), "--simulate",
                    env=clean_env(tmp_path), timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    inputs = [json.loads(line) for line in (ROOT / "examples/batch.jsonl").read_text().splitlines()
              if line.strip()]
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["custom_id"] for r in results] == [i["custom_id"] for i in inputs]
    assert all(r["response"]["status_code"] == 200 for r in results)
    assert all(r["dispatch"]["simulated"] is True for r in results)
    assert "SIMULATED" in proc.stderr
    vision = next(r for r in results if r["custom_id"].startswith("vision"))
    assert vision["dispatch"]["provider"] in {"groq", "cloudflare"}
    # the embedded Redis kept its data (AOF) in the state directory
    assert list((tmp_path / "state" / "redis").rglob("*.aof")) or list(
        (tmp_path / "state" / "redis").rglob("appendonlydir"))


@pytest.fixture
def cluster(tmp_path):
    cfg = write_config(
        tmp_path / "config",
        {"alpha": provider(model("a1"), limits=[{"unit": "requests", "limit": 2, "per": "day"}]),
         "beta": provider(model("b1"))},
        {"fast": ["alpha/a1"], "bulk": ["beta/b1"]},
        {"routing": {"preference_delay_s": 1.0, "horizon_s": 1.0}},
    )
    with Cluster(cfg, tmp_path) as c:
        c.start_worker("--all")
        yield c


def cluster_env(c: Cluster) -> dict:
    return {**os.environ, "REDIS_URL": TEST_REDIS_URL, "DISPATCH_NAMESPACE": c.namespace,
            "DISPATCH_CONFIG": str(c.config_dir)}


def test_submit_status_results_on_a_running_cluster(cluster, tmp_path):
    batch_file = tmp_path / "b.jsonl"
    batch_file.write_text("\n".join(job_line(f"q{i}", "bulk") for i in range(5)) + "\n")
    env = cluster_env(cluster)
    sub = dispatch("submit", str(batch_file), "--simulate", env=env)
    assert sub.returncode == 0, sub.stderr
    batch = sub.stdout.strip()
    assert batch.startswith("batch_")
    cluster.wait(batch)
    status = dispatch("status", batch, env=env)
    assert status.returncode == 0 and "completed" in status.stdout and "beta=5" in status.stdout
    out = tmp_path / "r.jsonl"
    res = dispatch("results", batch, "-o", str(out), env=env)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == [f"q{i}" for i in range(5)]


def test_cancel_ends_waiting_jobs_and_keeps_finished_ones(cluster, tmp_path):
    batch_file = tmp_path / "c.jsonl"
    batch_file.write_text("\n".join(job_line(f"c{i}", "fast") for i in range(6)) + "\n")
    env = cluster_env(cluster)
    batch = dispatch("submit", str(batch_file), "--simulate", env=env).stdout.strip()
    deadline = time.monotonic() + 30
    while cluster.batch(batch)["completed"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # the other four now wait for tomorrow's quota, in Redis
    assert cluster.batch(batch)["completed"] == 2
    cancel = dispatch("cancel", batch, env=env)
    assert cancel.returncode == 0 and "cancelled 4" in cancel.stdout
    lines = cluster.wait(batch, timeout=10)
    codes = [(x["error"] or {}).get("code") for x in lines]
    assert codes.count("cancelled") == 4 and codes.count(None) == 2


def test_commands_that_need_a_cluster_say_so_without_redis_url(tmp_path):
    proc = dispatch("status", env=clean_env(tmp_path))
    assert proc.returncode == 2 and "REDIS_URL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_celery_app_refuses_to_import_without_redis_url(tmp_path):
    code = "import workers.celery_app"
    env = clean_env(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    assert proc.returncode != 0 and "REDIS_URL is needed" in proc.stderr
    env["REDIS_URL"] = "redis://127.0.0.1:6379/3"
    code = ("from workers.celery_app import app; "
            "print(app.conf.broker_url, app.connection().transport_cls)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("redis://127.0.0.1:6379/3") and "amqp" not in proc.stdout


def test_providers_test_sends_one_request_per_usable_model_under_quota(tmp_path):
    cfg = write_config(
        tmp_path / "config",
        {"alpha": provider(model("a1"), model("a2"), limits=[
            {"unit": "requests", "limit": 1, "per": "day"}]),
         "beta": provider(model("b1"), dialect="groq")},
        {"fast": ["alpha/a1", "beta/b1"]},
    )
    proc = dispatch("providers", "--test", "--simulate", "--config", str(cfg),
                    env=clean_env(tmp_path))
    out = proc.stdout
    assert "beta/b1" in out and "Simulated reply" in out
    # alpha allows one request a day: one model answers, the other is refused before sending
    assert "no quota" in out and "1 request/day" in out
    assert proc.returncode == 1  # not every model answered
    none = dispatch("providers", "--test", "--config", str(cfg), env=clean_env(tmp_path))
    assert none.returncode == 2 and "--simulate" in none.stderr


def test_a_worker_with_different_limits_refuses_to_start(cluster, tmp_path):
    other = write_config(
        tmp_path / "other",
        {"alpha": provider(model("a1"), limits=[{"unit": "requests", "limit": 99, "per": "day"}]),
         "beta": provider(model("b1"))},
        {"fast": ["alpha/a1"], "bulk": ["beta/b1"]},
    )
    deadline = time.monotonic() + 30  # the cluster's worker has put its limits in force
    while not cluster.r.exists(f"{cluster.namespace}:q:limits") and time.monotonic() < deadline:
        time.sleep(0.1)
    env = {**cluster_env(cluster), "DISPATCH_CONFIG": str(other)}
    proc = dispatch("worker", "--all", "--config", str(other), env=env, timeout=60)
    assert proc.returncode == 2
    assert "limits" in proc.stderr.lower() and "Traceback" not in proc.stderr


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    import signal

    cfg = write_config(
        tmp_path / "config",
        {"alpha": provider(model("a1"), limits=[{"unit": "requests", "limit": 1,
                                                "per": "minute"}])},
        {"fast": ["alpha/a1"]},
    )
    batch_file = tmp_path / "b.jsonl"
    batch_file.write_text("\n".join(job_line(f"k{i}", "fast") for i in range(3)) + "\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dispatcher.cli", "run", str(batch_file), "-o",
         str(tmp_path / "out.jsonl"), "--simulate", "--config", str(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=clean_env(tmp_path))
    deadline = time.monotonic() + 60
    state = tmp_path / "state" / "redis"
    while time.monotonic() < deadline and not (state / "server.json").exists():
        time.sleep(0.1)
    server = json.loads((state / "server.json").read_text())
    time.sleep(4.0)  # one job done, two waiting for the next minute's quota
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "dispatch run --resume batch_" in err
    assert "Traceback" not in err
    assert not (state / "server.json").exists(), "the embedded Redis was not stopped"
    assert not pid_alive(server["pid"])


def test_deadline_expires_jobs_that_cannot_get_quota_in_time(tmp_path):
    cfg = write_config(
        tmp_path / "config",
        {"alpha": provider(model("a1"), limits=[{"unit": "requests", "limit": 1,
                                                "per": "day"}])},
        {"fast": ["alpha/a1"]},
    )
    batch_file = tmp_path / "b.jsonl"
    batch_file.write_text("\n".join(job_line(f"d{i}", "fast") for i in range(3)) + "\n")
    out = tmp_path / "out.jsonl"
    proc = dispatch("run", str(batch_file), "-o", str(out), "--simulate", "--config", str(cfg),
                    "--deadline", "3s", "--strict", env=clean_env(tmp_path), timeout=90)
    assert proc.returncode == 3, proc.stderr[-2000:]  # --strict: some jobs failed
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    codes = [(x["error"] or {}).get("code") for x in lines]
    assert codes.count("expired") == 2 and codes.count(None) == 1


def test_an_output_path_that_cannot_be_written_is_refused_before_anything_is_sent(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a directory")
    proc = dispatch("run", "examples/batch.jsonl", "-o", str(blocker / "out.jsonl"),
                    "--simulate", env=clean_env(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert "not a directory" in proc.stderr and "nothing was sent" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "state").exists(), "nothing may start before the check"
    proc = dispatch("run", "examples/batch.jsonl", "-o", str(tmp_path), "--simulate",
                    env=clean_env(tmp_path))
    assert proc.returncode == 2 and "is a directory" in proc.stderr


def _stored_batch(c: Cluster, simulated: bool, targets: list[str] | None = None) -> str:
    """A batch written straight into the cluster's job store (as a past submit left it)."""
    from types import SimpleNamespace

    from workers.runtime import get_runtime

    spec = SimpleNamespace(custom_id="r0", tag="bulk", targets=targets or ["beta/b1"],
                           body={"model": "b1", "max_tokens": 8,
                                 "messages": [{"role": "user", "content": "hi"}]})
    return get_runtime().store.create_batch([spec], simulated=simulated, deadline_s=600)[0]


def test_resume_of_a_batch_that_does_not_exist_exits_2(tmp_path):
    out = tmp_path / "o.jsonl"
    fresh = dispatch("run", "--resume", "batch_nope", "-o", str(out), env=clean_env(tmp_path))
    assert fresh.returncode == 2 and "no batch 'batch_nope'" in fresh.stderr, fresh.stderr
    assert not out.exists()
    cfg = write_config(tmp_path / "config", {"beta": provider(model("b1"))}, {"bulk": ["beta/b1"]})
    with Cluster(cfg, tmp_path) as c:
        proc = dispatch("run", "--resume", "batch_nope", "-o", str(out), "--workers",
                        "external", env=cluster_env(c))
        assert proc.returncode == 2 and "no batch 'batch_nope'" in proc.stderr, proc.stderr
        assert not out.exists() and "Traceback" not in proc.stderr


def test_resume_follows_the_batch_and_refuses_a_contradicting_flag(cluster, tmp_path):
    env = cluster_env(cluster)
    out = tmp_path / "o.jsonl"
    simulated = _stored_batch(cluster, simulated=True)
    live = _stored_batch(cluster, simulated=False)
    refused = dispatch("run", "--resume", simulated, "-o", str(out), "--no-simulate",
                       "--workers", "external", env=env)
    assert refused.returncode == 2, refused.stderr
    assert "was submitted with --simulate" in refused.stderr and not out.exists()
    refused = dispatch("run", "--resume", live, "-o", str(out), "--simulate", "--workers",
                       "external", env=env)
    assert refused.returncode == 2 and "real providers" in refused.stderr, refused.stderr
    # no flag: the batch decides (simulated), and it runs to the end on the cluster
    ok = dispatch("run", "--resume", simulated, "-o", str(out), "--workers", "external",
                  env=env, timeout=90)
    assert ok.returncode == 0, ok.stderr[-2000:]
    [line] = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["response"]["status_code"] == 200 and line["dispatch"]["simulated"] is True


def test_resume_refuses_a_batch_the_configuration_can_no_longer_serve(cluster, tmp_path):
    gone = _stored_batch(cluster, simulated=True, targets=["retired/m1"])
    proc = dispatch("run", "--resume", gone, "-o", str(tmp_path / "o.jsonl"), "--workers",
                    "external", env=cluster_env(cluster))
    assert proc.returncode == 2, proc.stderr
    assert "retired/m1" in proc.stderr and "nothing was sent" in proc.stderr


def test_submit_simulate_without_a_simulator_for_the_cluster_is_refused(cluster, tmp_path):
    batch_file = tmp_path / "b.jsonl"
    batch_file.write_text(job_line("s0", "bulk") + "\n")
    env = {k: v for k, v in cluster_env(cluster).items() if k != "DISPATCH_SIMULATOR_URL"}
    proc = dispatch("submit", str(batch_file), "--simulate", env=env)
    assert proc.returncode == 2 and "dispatch up --simulate" in proc.stderr, proc.stderr
    assert cluster.r.zcard(f"{cluster.namespace}:batches") == 0


def test_the_result_says_which_max_tokens_was_sent_when_it_differs(cluster):
    batch = cluster.submit([job_line("huge", "bulk", max_tokens=1_000_000_000),
                            job_line("own", "bulk", max_tokens=16),
                            json.dumps({"custom_id": "none", "method": "POST",
                                        "url": "/v1/chat/completions",
                                        "body": {"model": "bulk", "messages": [
                                            {"role": "user", "content": "hi"}]}})])
    lines = {x["custom_id"]: x for x in cluster.wait(batch)}
    assert lines["huge"]["dispatch"]["max_tokens_sent"] == 1024  # the model's cap
    assert "max_tokens_sent" not in lines["own"]["dispatch"]  # sent as asked
    assert lines["none"]["dispatch"]["max_tokens_sent"] > 0  # a default was sent
