"""The newcomer's path, as the README tells it: `dispatch up --simulate` in one shell, then
from a second shell in the same directory (no REDIS_URL) submit, status, results and
quota --json, with a `providers --simulate --test` in between that changes nothing for the
cluster; then Ctrl-C stops everything, the embedded server included."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from dispatcher.embedded import pid_alive, read_server
from tests.cluster import job_line, model, provider, write_config


def fresh_env() -> dict:
    """A second shell on a fresh machine: no REDIS_URL, no keys, no DISPATCH_* variables."""
    return {k: v for k, v in os.environ.items()
            if k != "REDIS_URL" and not k.startswith("DISPATCH_") and not k.endswith("_API_KEY")}


def dispatch(cwd: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispatcher.cli", *args], cwd=cwd,
                          env=fresh_env(), capture_output=True, text=True, timeout=timeout)


def leftovers(marker: str) -> list[str]:
    """Running (not zombie) processes whose command line mentions ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and pid_alive(int(entry.name)):
            found.append(f"{entry.name}: {cmd}")
    return found


def wait_for(what: str, check, timeout: float = 90.0, every: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def test_up_then_a_second_shell_submits_follows_and_collects(tmp_path):
    write_config(tmp_path / "config",  # ./config: the default, as in a checkout
                 {"alpha": provider(model("a1"), model("a2")),
                  "beta": provider(model("b1"), limits=[
                      {"unit": "requests", "limit": 1000, "per": "day"}])},
                 {"fast": ["alpha/a1", "beta/b1"], "bulk": ["beta/b1"]})
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "dispatcher.cli", "up", "--simulate",
                               "--no-flower", "--no-beat", "--loglevel", "warning"],
                              cwd=tmp_path, env=fresh_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        banner = wait_for("`dispatch up` to be running",
                          lambda: (t := log.read_text()) and "Ctrl-C stops everything" in t and t)
        server = read_server(tmp_path / ".dispatch" / "redis")
        assert server is not None
        m = re.search(r"export REDIS_URL=(\S+)", banner)
        assert m and m.group(1) == server.url, banner
        worker_pids = [int(p) for p in re.findall(r"^\s*(?:router|worker-\w+)\s+(\d+)\s",
                                                  banner, re.M)]
        assert len(worker_pids) == 3, banner
        r = redis.Redis.from_url(server.url, decode_responses=True)
        registered = r.zrange("dispatch:simulators", 0, -1)
        assert len(registered) == 1, registered

        # a newcomer tries the providers in between: its own simulator, not the cluster's
        test = dispatch(tmp_path, "providers", "--simulate", "--test")
        assert test.returncode == 0, test.stdout + test.stderr
        assert [row.split("\t")[1] for row in test.stdout.splitlines()[1:]] == ["ok"] * 3
        assert r.zrange("dispatch:simulators", 0, -1) == registered

        batch_file = tmp_path / "b.jsonl"
        batch_file.write_text("\n".join(job_line(f"q{i}", "fast" if i % 2 else "bulk")
                                        for i in range(6)) + "\n")
        sub = dispatch(tmp_path, "submit", "b.jsonl", "--simulate")
        assert sub.returncode == 0, sub.stderr
        batch = sub.stdout.strip()
        assert batch.startswith("batch_") and "Traceback" not in sub.stderr

        def finished():
            res = dispatch(tmp_path, "status", batch, "--json")
            assert res.returncode == 0, res.stderr
            doc = json.loads(res.stdout)
            return doc if doc["status"] == "completed" else None

        doc = wait_for("the batch to complete", finished, timeout=60, every=1.0)
        assert doc["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
        listed = dispatch(tmp_path, "status")
        assert any(line.split("\t")[0] == batch for line in listed.stdout.splitlines())

        res = dispatch(tmp_path, "results", batch, "-o", "out.jsonl")
        assert res.returncode == 0, res.stderr
        lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert [x["custom_id"] for x in lines] == [f"q{i}" for i in range(6)]
        assert all(x["response"]["status_code"] == 200 and x["dispatch"]["simulated"]
                   for x in lines), lines

        quota = dispatch(tmp_path, "quota", "--json")
        assert quota.returncode == 0, quota.stderr
        used = {q["simulated"]: q["used"] for q in json.loads(quota.stdout)
                if q["provider"] == "beta" and q["model"] is None}
        assert used[False] == 0  # real counters untouched by simulated work
        assert used[True] >= 3  # the bulk jobs (beta only), each labelled simulated
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
    text = log.read_text()
    assert up.returncode == 0, text
    assert "stopped." in text and "Traceback" not in text
    assert not pid_alive(server.pid), "the embedded server outlived `dispatch up`"
    assert not [p for p in worker_pids if pid_alive(p)]
    assert not leftovers(str(tmp_path)), leftovers(str(tmp_path))
    assert read_server(tmp_path / ".dispatch" / "redis") is None

    # later, from any shell in the directory: the batch is still there, and nothing stays up
    again = dispatch(tmp_path, "status", batch, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["request_counts"]["completed"] == 6
    assert read_server(tmp_path / ".dispatch" / "redis") is None
    assert not leftovers(str(tmp_path / ".dispatch"))


def test_sigterm_on_run_leaves_no_process_behind(tmp_path):
    cfg = write_config(tmp_path / "config",
                       {"alpha": provider(model("a1"), limits=[
                           {"unit": "requests", "limit": 1, "per": "minute"}])},
                       {"fast": ["alpha/a1"]})
    batch_file = tmp_path / "b.jsonl"
    batch_file.write_text("\n".join(job_line(f"k{i}", "fast") for i in range(3)) + "\n")
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        run = subprocess.Popen([sys.executable, "-m", "dispatcher.cli", "run", "b.jsonl", "-o",
                                "out.jsonl", "--simulate", "--config", str(cfg)], cwd=tmp_path,
                               env=fresh_env(), stdout=out, stderr=subprocess.STDOUT)
    wait_for("one job done, the others waiting for quota",
             lambda: "jobs queued" in log.read_text() and (tmp_path / ".dispatch" / "logs"
                                                          / "worker-all.log").exists())
    server = read_server(tmp_path / ".dispatch" / "redis")
    assert server is not None
    time.sleep(2.0)
    assert leftovers(str(tmp_path)), "the workers should be running now"
    run.send_signal(signal.SIGTERM)
    run.wait(timeout=60)
    text = log.read_text()
    assert run.returncode == 130, text
    assert "dispatch run --resume batch_" in text and "Traceback" not in text
    assert not pid_alive(server.pid)
    assert not leftovers(str(tmp_path)), leftovers(str(tmp_path))
