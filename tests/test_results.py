"""OpenAI batch output lines with the dispatch block, and atomic results files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.results import (
    DISPATCH_KEYS,
    ERROR_CODES,
    request_line_id,
    result_line,
    succeeded,
    write_results,
)
from tests.cluster import ROOT, TEST_REDIS_URL, Cluster, job_line, model, provider, write_config

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "llama-3.1-8b-instant",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": USAGE,
}
SERVED = {"provider": "groq", "model": "llama-3.1-8b-instant", "attempts": 1,
          "latency_ms": 321, "usage": USAGE}


def test_success_line_shape() -> None:
    line = result_line("req-1", batch_id="b1", index=0, status_code=200, body=COMPLETION,
                       error=None, request_id="req_abc", dispatch=SERVED)
    assert line == {
        "id": request_line_id("b1", 0),
        "custom_id": "req-1",
        "response": {"status_code": 200, "request_id": "req_abc", "body": COMPLETION},
        "error": None,
        "dispatch": SERVED,
    }
    assert line["id"].startswith("batch_req_")
    assert "simulated" not in line["dispatch"]
    assert succeeded(line)
    json.dumps(line)  # serialisable as is


def test_upstream_error_is_a_response() -> None:
    err = {"error": {"message": "slow down", "type": "rate_limit", "param": None,
                     "code": "rate_limit_exceeded"}}
    line = result_line("req-2", batch_id="b1", index=1, status_code=429, body=err,
                       error=None, request_id=None, dispatch={**SERVED, "attempts": 3})
    assert line["response"] == {"status_code": 429, "request_id": None, "body": err}
    assert line["error"] is None
    assert line["dispatch"]["attempts"] == 3
    assert not succeeded(line)


def test_error_inside_http_200_is_not_a_success() -> None:
    body = {"error": {"message": "model overloaded", "type": "server_error", "param": None,
                      "code": None}}
    line = result_line("r", batch_id="b", index=0, status_code=200, body=body, error=None,
                       request_id=None, dispatch=SERVED)
    assert line["response"]["status_code"] == 200
    assert not succeeded(line)


def test_no_answer_line_shape() -> None:
    line = result_line("req-3", batch_id="b1", index=2, status_code=None, body=None,
                       error={"code": "expired", "message": "deadline passed"},
                       request_id=None, dispatch={})
    assert line["response"] is None
    assert line["error"] == {"code": "expired", "message": "deadline passed"}
    assert set(DISPATCH_KEYS) <= set(line["dispatch"])
    assert line["dispatch"]["provider"] is None and line["dispatch"]["attempts"] == 0
    assert not succeeded(line)


def test_error_message_defaults_to_code() -> None:
    line = result_line("r", batch_id="b", index=0, status_code=None, body=None,
                       error={"code": "cancelled"}, request_id=None, dispatch={})
    assert line["error"] == {"code": "cancelled", "message": "cancelled"}


@pytest.mark.parametrize("simulated, present", [(True, True), (False, False), (None, False)])
def test_simulated_only_when_true(simulated: bool | None, present: bool) -> None:
    line = result_line("r", batch_id="b", index=0, status_code=200, body=COMPLETION,
                       error=None, request_id=None,
                       dispatch={**SERVED, "simulated": simulated})
    assert ("simulated" in line["dispatch"]) is present
    if present:
        assert line["dispatch"]["simulated"] is True


def test_extra_dispatch_keys_kept() -> None:
    line = result_line("r", batch_id="b", index=0, status_code=200, body=COMPLETION,
                       error=None, request_id=None, dispatch={**SERVED, "tag": "fast"})
    assert line["dispatch"]["tag"] == "fast"


def test_documented_error_codes() -> None:
    assert {"no_target", "expired", "cancelled", "retries_exhausted",
            "rejected_by_all_targets"} <= set(ERROR_CODES)
    assert all(ERROR_CODES.values())


@pytest.mark.parametrize(
    "status_code, error",
    [(200, {"code": "expired"}), (None, None), (None, {"code": "made_up"})],
)
def test_inconsistent_arguments_refused(status_code: int | None, error: Any) -> None:
    with pytest.raises(ValueError):
        result_line("r", batch_id="b", index=0, status_code=status_code, body=None,
                    error=error, request_id=None, dispatch={})


def test_line_ids_stable_and_distinct() -> None:
    assert request_line_id("b1", 0) == request_line_id("b1", 0)
    ids = {request_line_id(b, i) for b in ("b1", "b2") for i in range(100)}
    assert len(ids) == 200


def _lines(n: int) -> list[dict[str, Any]]:
    return [
        result_line(f"r{i}", batch_id="b", index=i, status_code=200, body=COMPLETION,
                    error=None, request_id=None, dispatch=SERVED)
        for i in range(n)
    ]


def test_write_results_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "out.jsonl"
    lines = _lines(3)
    assert write_results(out, lines) == 3
    text = out.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert [json.loads(x) for x in text.splitlines()] == lines
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.jsonl"]


def test_write_results_escapes_unpaired_surrogates(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    write_results(out, [{"custom_id": "é\ud800"}])
    assert json.loads(out.read_text(encoding="utf-8")) == {"custom_id": "é\ud800"}


def test_write_results_is_atomic(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    write_results(out, _lines(2))
    out.chmod(0o600)
    before = out.read_bytes()

    def failing() -> Iterator[dict[str, Any]]:
        yield from _lines(1)
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_results(out, failing())
    assert out.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left

    write_results(out, _lines(1))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # an existing file keeps its mode


# -- honest results of an unfinished batch (issue #11 item 6) ---------------------------


def test_a_pending_job_has_no_result_line() -> None:
    from dispatcher.batches import to_result_line

    for state in ("waiting", "dispatched", "running", "missing"):
        with pytest.raises(ValueError, match="has not ended"):
            to_result_line("b", 0, "r", state, None)
    ended = to_result_line("b", 0, "r", "expired", {"error": {"code": "expired",
                                                             "message": "deadline"}})
    assert ended["error"]["code"] == "expired"


def test_output_problem_names_the_part_and_the_reason(tmp_path: Path) -> None:
    from dispatcher.results import output_problem

    (tmp_path / "file").write_text("x")
    assert output_problem(tmp_path / "out.jsonl") is None
    assert output_problem(tmp_path / "new" / "dir" / "out.jsonl") is None
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert "is not a directory" in (output_problem(tmp_path / "file" / "out.jsonl") or "")
    assert "is not a directory" in (output_problem(tmp_path / "file" / "a" / "o.jsonl") or "")
    assert "is a directory" in (output_problem(tmp_path) or "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no probe left behind


# -- `dispatch results` on a running cluster: real Redis, real workers, real simulator ----


def _dispatch(*args: str, env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispatcher.cli", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120, **kw)


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture
def quota_bound(tmp_path: Path) -> Iterator[tuple[Cluster, dict[str, str], str]]:
    """A cluster whose only `fast` target allows 2 requests an hour (a rolling window: no
    midnight reset to race): of a 6-job batch, 2 end and 4 wait until it is cancelled."""
    cfg = write_config(
        tmp_path / "config",
        {"alpha": provider(model("a1"), limits=[{"unit": "requests", "limit": 2,
                                                "per": "hour"}]),
         "beta": provider(model("b1"))},
        {"fast": ["alpha/a1"], "bulk": ["beta/b1"]},
    )
    with Cluster(cfg, tmp_path) as c:
        c.start_worker("--all")
        env = {**os.environ, "REDIS_URL": TEST_REDIS_URL, "DISPATCH_NAMESPACE": c.namespace,
               "DISPATCH_CONFIG": str(c.config_dir)}
        batch = c.submit([job_line(f"e{i}", "fast") for i in range(6)])
        _until(lambda: c.batch(batch)["completed"] >= 2, "two jobs served")
        yield c, env, batch


def _served(lines: list[dict[str, Any]], batch: str) -> bool:
    """Exactly the completed jobs' lines (which two won the quota race is not fixed), in
    input order, each a 200."""
    from workers.runtime import get_runtime

    done = [cid for _, cid, state, _ in get_runtime().store.results(batch)
            if state == "completed"]
    assert len(done) == 2, done
    assert [x["custom_id"] for x in lines] == done
    return all(x["response"]["status_code"] == 200 and x["error"] is None for x in lines)


def _until(cond: Any, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.1)


def test_early_results_hold_only_the_finished_lines_and_say_how_many_are_pending(
        quota_bound: tuple[Cluster, dict[str, str], str], tmp_path: Path) -> None:
    c, env, batch = quota_bound
    out = tmp_path / "early.jsonl"
    proc = _dispatch("results", batch, "-o", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    lines = _read(out)
    assert _served(lines, batch)  # the two that ended, in input order; no pending one
    assert "4 jobs pending" in proc.stderr and "wrote 2 ended lines" in proc.stderr
    assert c.batch(batch)["completed"] == 2  # collecting changed nothing


def test_wait_blocks_until_the_batch_ends_and_then_writes_every_line(
        quota_bound: tuple[Cluster, dict[str, str], str], tmp_path: Path) -> None:
    c, env, batch = quota_bound
    out = tmp_path / "all.jsonl"

    def blocked_then_cancel(waiter: subprocess.Popen[str]) -> None:
        time.sleep(1.0)
        assert waiter.poll() is None and not out.exists()  # still waiting, nothing written
        assert _dispatch("cancel", batch, env=env).returncode == 0  # the other 4 end now

    code, err = _while_waiting(env, batch, out, blocked_then_cancel)
    assert code == 0, err
    lines = _read(out)
    assert [x["custom_id"] for x in lines] == [f"e{i}" for i in range(6)]
    codes = [(x["error"] or {}).get("code") for x in lines]
    assert codes.count(None) == 2 and codes.count("cancelled") == 4
    assert "progress: 2/6" in err and "pending" not in err and "Traceback" not in err


def _while_waiting(env: dict[str, str], batch: str, out: Path,
                   then: Any) -> tuple[int, str]:
    """Run `results --wait`, call ``then(process)`` once its first progress line is out
    (it is waiting then), and return its exit code and stderr."""
    waiter = subprocess.Popen(
        [sys.executable, "-m", "dispatcher.cli", "results", batch, "-o", str(out), "--wait"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        seen = ""
        for line in waiter.stderr or ():
            seen += line
            if "progress:" in line:
                break
        else:
            raise AssertionError(f"no progress line: {seen}")
        then(waiter)
        seen += waiter.communicate(timeout=60)[1]
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    return waiter.returncode, seen


def test_wait_returns_every_line_of_a_batch_that_completes(
        quota_bound: tuple[Cluster, dict[str, str], str], tmp_path: Path) -> None:
    c, env, _ = quota_bound
    batch = c.submit([job_line(f"w{i}", "bulk") for i in range(8)])
    out = tmp_path / "done.jsonl"
    proc = _dispatch("results", batch, "-o", str(out), "--wait", "--timeout", "2m", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = _read(out)
    assert [x["custom_id"] for x in lines] == [f"w{i}" for i in range(8)]
    assert all(x["response"]["status_code"] == 200 for x in lines)


def test_wait_timeout_writes_the_finished_lines_and_exits_124(
        quota_bound: tuple[Cluster, dict[str, str], str], tmp_path: Path) -> None:
    _, env, batch = quota_bound
    out = tmp_path / "partial.jsonl"
    proc = _dispatch("results", batch, "-o", str(out), "--wait", "--timeout", "1s", env=env)
    assert proc.returncode == 124, proc.stderr
    assert _served(_read(out), batch)
    assert "timed out" in proc.stderr and "4 jobs pending" in proc.stderr


def test_ctrl_c_while_waiting_exits_130_cleanly(
        quota_bound: tuple[Cluster, dict[str, str], str], tmp_path: Path) -> None:
    _, env, batch = quota_bound
    out = tmp_path / "never.jsonl"
    code, err = _while_waiting(env, batch, out, lambda w: w.send_signal(signal.SIGINT))
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("where", ["parent_is_a_file", "a_directory", "no_permission"])
def test_an_unwritable_output_is_refused_before_waiting(tmp_path: Path, where: str) -> None:
    """Exit 2 with the path and the reason; checked before Redis or the batch is looked at
    (no REDIS_URL here at all), so `--wait` never waits for a file it cannot write."""
    (tmp_path / "file").write_text("x")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    cmd = [sys.executable, "-m", "dispatcher.cli", "results", "batch_x", "--wait", "-o"]
    if where == "parent_is_a_file":
        cmd.append(str(tmp_path / "file" / "out.jsonl"))
        expected = "is not a directory"
    elif where == "a_directory":
        cmd.append(str(tmp_path))
        expected = "is a directory"
    else:
        locked = Path(tempfile.mkdtemp(prefix="dispatch-ro-"))
        locked.chmod(0o555)
        cmd.append(str(locked / "out.jsonl"))
        expected = "Permission denied"
        if os.geteuid() == 0:  # root writes anywhere: run it without that power
            drop = "-dac_override,-dac_read_search"
            cmd = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", "--", *cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=60)
    finally:
        if where == "no_permission":
            locked.chmod(0o755)
            shutil.rmtree(locked)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr


def test_an_unreachable_redis_is_an_infrastructure_failure_not_a_traceback(
        tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    proc = _dispatch("results", "batch_x", "-o", str(tmp_path / "o.jsonl"), env=env)
    assert proc.returncode == 1, proc.stderr
    assert "Redis failed" in proc.stderr and "Traceback" not in proc.stderr


def test_dispatch_run_checks_its_output_before_submitting(tmp_path: Path) -> None:
    """Exit 2 before any Redis is started or job queued: no state directory appears."""
    (tmp_path / "file").write_text("x")
    batch = tmp_path / "in.jsonl"
    batch.write_text(job_line("r1", "fast") + "\n")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"
           and not k.startswith("DISPATCH_")}
    env["DISPATCH_STATE_DIR"] = str(tmp_path / "state")
    proc = _dispatch("run", str(batch), "-o", str(tmp_path / "file" / "out.jsonl"),
                     "--simulate", "--config", str(ROOT / "config"), env=env)
    assert proc.returncode == 2, proc.stderr
    assert "is not a directory" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "state").exists()
