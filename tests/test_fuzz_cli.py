"""The commands a user runs, on garbage: exit 2, the line or key path, never a traceback.

``dispatch run``, ``dispatch submit`` and ``dispatch config check`` as subprocesses on
batch files and configuration files holding the garbage of issue #11 (tool_calls of the
wrong type, a 5,000-digit integer, 10,000 levels of nesting, invalid UTF-8, NUL bytes, a
line over the byte cap). Each is refused before anything is queued or started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster import ROOT, TEST_REDIS_URL
from tests.conftest import SHIPPED_CONFIG

GOOD = json.dumps({"custom_id": "ok", "body": {"model": "fast", "messages": [
    {"role": "user", "content": "hi"}]}})

BAD_LINES = {
    "tool_calls": (json.dumps({"custom_id": "a", "body": {"model": "fast", "messages": [
        {"role": "assistant", "tool_calls": 5}]}}).encode(),
        "line 2: body.messages[0].tool_calls: must be a list of objects (got int)"),
    "huge_int": (b'{"custom_id": "a", "body": {"max_tokens": ' + b"9" * 5000 + b"}}",
                 "line 2: an integer of 5000 digits"),
    "deep": (b'{"custom_id": "a", "body": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
             "line 2: nested too deeply to decode"),
    "utf8": (b'{"custom_id": "\xff\xfe"}', "line 2: not valid UTF-8 (byte 16)"),
    "nul": (b'{"custom_id": "a\x00"}', "line 2: a NUL byte at column 17"),
    "too_long": (b'{"custom_id": "a", "metadata": "' + b"x" * 40_000 + b'"}',
                 "line 2: 40,034 bytes, more than the 32,768 of settings.yaml "
                 "jobs.max_line_bytes"),
}


def _dispatch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispatcher.cli", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The shipped catalog with a small line cap (so "too long" needs no 100 MB file)."""
    d = tmp_path / "config"
    shutil.copytree(SHIPPED_CONFIG, d)
    (d / "settings.yaml").write_text("jobs: {max_line_bytes: 32768}\n")
    return d


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k != "REDIS_URL" and not k.startswith("DISPATCH_")}
    return {**env, "DISPATCH_STATE_DIR": str(tmp_path / "state"), **extra}


def test_run_and_submit_refuse_bad_lines_with_exit_2(tmp_path: Path, config: Path) -> None:
    """One file, a good line then every kind of garbage: each reported with its line."""
    kinds = sorted(BAD_LINES)
    batch = tmp_path / "in.jsonl"
    batch.write_bytes(b"\n".join([GOOD.encode(), *(BAD_LINES[k][0] for k in kinds)]) + b"\n")
    for args, env in (
        (["run", str(batch), "-o", str(tmp_path / "out.jsonl"), "--simulate"], _env(tmp_path)),
        (["submit", str(batch), "--simulate"], _env(tmp_path, REDIS_URL=TEST_REDIS_URL,
                                                    DISPATCH_NAMESPACE="fuzzcli")),
    ):
        proc = _dispatch(*args, "--config", str(config), env=env)
        assert proc.returncode == 2, (args[0], proc.stderr)
        assert "invalid batch, nothing was sent" in " ".join(proc.stderr.split())
        for n, kind in enumerate(kinds, start=2):
            expected = BAD_LINES[kind][1].replace("line 2:", f"line {n}:")
            assert expected in proc.stderr, (kind, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out.jsonl").exists()
    assert not (tmp_path / "state").exists()  # refused before any Redis was started


BAD_CONFIGS = {
    "deep": ("routes.yaml", b"routes: " + b"[" * 10_000 + b"]" * 10_000,
             "routes.yaml (line 1, column"),
    "huge_int": ("settings.yaml", b"jobs: {max_lines: " + b"9" * 5000 + b"}\n",
                 "settings.yaml (line 1, column 19): invalid YAML: an integer of 5000"),
    "utf8": ("providers.yaml", b"providers:\n  a\xff: {}\n",
             "providers.yaml (line 2, column 4): not valid UTF-8 (byte 0xff)"),
    "nul": ("routes.yaml", b"routes:\n  fast: [a\x00]\n",
            "routes.yaml (line 2, column 11): a NUL character"),
    "wrong_type": ("settings.yaml", b"quota: {chars_per_token: [1]}\n",
                   "settings.yaml: quota.chars_per_token: Input should be a valid number"),
    "inf": ("settings.yaml", b"routing: {horizon_s: .inf}\n",
            "settings.yaml: routing.horizon_s: Input should be a finite number"),
}


@pytest.mark.parametrize("kind", sorted(BAD_CONFIGS))
def test_config_check_refuses_a_bad_config_file_with_exit_2(
        tmp_path: Path, config: Path, kind: str) -> None:
    name, content, expected = BAD_CONFIGS[kind]
    (config / name).write_bytes(content)
    commands = [["config", "check"]]
    if kind in ("deep", "utf8"):  # and a command that would start things
        (tmp_path / "in.jsonl").write_text(GOOD + "\n")
        commands.append(["run", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o.jsonl"),
                         "--simulate"])
    for args in commands:
        proc = _dispatch(*args, "--config", str(config), env=_env(tmp_path))
        assert proc.returncode == 2, (args, proc.stderr)
        assert expected in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("args, expected", [
    (["run", "{batch}", "-o", "{out}", "--simulate", "--deadline", "inf"], "--deadline 'inf'"),
    (["run", "{batch}", "-o", "{out}", "--simulate", "--deadline", "-5m"], "--deadline '-5m'"),
    (["results", "batch_x", "-o", "{out}", "--wait", "--timeout", "nan"], "--timeout 'nan'"),
    (["results", "batch_x", "-o", "{out}", "--timeout", "5m"], "--timeout only applies"),
])
def test_durations_that_are_not_durations_exit_2(tmp_path: Path, config: Path,
                                                   args: list[str], expected: str) -> None:
    batch = tmp_path / "in.jsonl"
    batch.write_text(GOOD + "\n")
    argv = [a.format(batch=batch, out=tmp_path / "out.jsonl") for a in args]
    proc = _dispatch(*argv, "--config", str(config), env=_env(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "state").exists()
