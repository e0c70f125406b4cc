"""Cron automation: time zones, the tick guard, RedBeat sync, `dispatch up`, two beats.

Real Redis, real worker and beat subprocesses. Ticks use ``DISPATCH_BEAT_EVERY_S`` (every
enabled schedule every N seconds, a documented testing knob) so a test sees several ticks
in seconds; the cron arithmetic itself is checked by the pure tests at the top.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.cluster import ROOT, TEST_REDIS_URL, Cluster, job_line, model, provider, write_config

EVERY_S = 2
LOCK_S = 4
FAST_BEAT = {"DISPATCH_BEAT_EVERY_S": str(EVERY_S), "DISPATCH_BEAT_MAX_INTERVAL": "1",
             "DISPATCH_BEAT_LOCK_TIMEOUT": str(LOCK_S)}
INLINE_JOB = {"body": {"model": "fast", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 8}}


# -- pure: cron in a time zone ---------------------------------------------------------


def test_crontab_fires_in_its_own_time_zone(monkeypatch):
    from workers.schedules import build_schedule, next_run, period_s

    monkeypatch.delenv("DISPATCH_BEAT_EVERY_S", raising=False)
    t = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
    assert next_run("0 9 * * *", "UTC", t) == datetime(2025, 1, 16, 9, 0, tzinfo=UTC)
    # 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer.
    assert next_run("0 9 * * *", "Europe/Paris", t) == datetime(2025, 1, 16, 8, 0, tzinfo=UTC)
    summer = datetime(2025, 7, 15, 10, 0, tzinfo=UTC)
    assert next_run("0 9 * * *", "Europe/Paris", summer) == datetime(2025, 7, 16, 7, 0,
                                                                      tzinfo=UTC)
    # Monday 09:00 New York, the day after DST began (EDT, UTC-4).
    assert next_run("0 9 * * 1", "America/New_York", datetime(2025, 3, 5, tzinfo=UTC)) == \
        datetime(2025, 3, 10, 13, 0, tzinfo=UTC)
    # Still the same local day in Tokyo (UTC+9): 23:30 UTC is 08:30 next morning there.
    assert next_run("45 8 * * *", "Asia/Tokyo", datetime(2025, 1, 1, 23, 30, tzinfo=UTC)) == \
        datetime(2025, 1, 1, 23, 45, tzinfo=UTC)
    assert period_s("*/15 * * * *", "UTC") == 900
    assert period_s("0 9 * * *", "Asia/Tokyo") == 86400
    sched = build_schedule("0 9 * * 1-5", "Asia/Tokyo")
    assert str(sched.tz) == "Asia/Tokyo"


def test_the_time_zone_survives_redbeats_json(monkeypatch):
    from workers.schedules import _Decoder, _Encoder, build_schedule

    monkeypatch.delenv("DISPATCH_BEAT_EVERY_S", raising=False)
    sched = build_schedule("30 6 1 * *", "Australia/Sydney")
    back = json.loads(json.dumps({"s": sched}, cls=_Encoder), cls=_Decoder)["s"]
    assert back == sched and str(back.tz) == "Australia/Sydney"
    assert back.minute == {30} and back.hour == {6} and back.day_of_month == {1}


def test_the_override_is_an_interval():
    os.environ["DISPATCH_BEAT_EVERY_S"] = "3"
    try:
        from celery.schedules import schedule

        from workers.schedules import build_schedule, period_s

        sched = build_schedule("0 9 * * *", "Europe/Paris")
        assert isinstance(sched, schedule) and sched.seconds == 3
        assert period_s("0 9 * * *", "Europe/Paris") == 3
    finally:
        del os.environ["DISPATCH_BEAT_EVERY_S"]


# -- helpers ----------------------------------------------------------------------------


def sched_config(tmp_path: Path, schedules: dict) -> Path:
    return write_config(tmp_path / "config", {"alpha": provider(model("a1"))},
                        {"fast": ["alpha/a1"]}, schedules=schedules)


def scheduled_batches(c: Cluster, name: str) -> list[dict]:
    from workers.runtime import get_runtime

    store = get_runtime().store
    out = [store.batch(b) or {} for b in store.batches(1000)]
    return [b for b in out if str(b.get("name", "")).startswith(f"schedule:{name}@")]


def start_beat(c: Cluster, name: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": TEST_REDIS_URL, "DISPATCH_NAMESPACE": c.namespace,
           "DISPATCH_CONFIG": str(c.config_dir), **FAST_BEAT}
    log = open(c.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "dispatcher.cli", "beat", "--simulate", *extra],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True,
    )
    c.procs.append(proc)  # the Cluster stops it with the workers
    return proc


def wait_for(pred, timeout: float, what: str, step: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ticks_sent(c: Cluster, name: str) -> list[int]:
    """Ticks the beat published (logged once the message is on the broker)."""
    return [int(t) for t in re.findall(r"schedule hello: sent tick (\d+)", c.log(name))]


def ticks_tried(c: Cluster, name: str) -> list[int]:
    """Ticks the beat started to send (a beat stopped meanwhile may not have sent one)."""
    return [int(t) for t in re.findall(r"schedule hello: sending tick (\d+)", c.log(name))]


# -- the task: validation, submission, one per tick --------------------------------------


def test_a_tick_submits_once_and_a_bad_batch_submits_nothing(tmp_path, caplog):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "jobs.jsonl").write_text(
        "\n".join(job_line(f"f{i}", "fast") for i in range(3)) + "\n")
    (tmp_path / "config" / "bad.jsonl").write_text(
        job_line("ok", "fast") + "\n{not json\n" + job_line("x", "no-such-tag") + "\n")
    cfg = sched_config(tmp_path, {
        "inline": {"cron": "0 * * * *", "jobs": [INLINE_JOB, {**INLINE_JOB, "custom_id": "own"}]},
        "file": {"cron": "0 9 * * *", "timezone": "Europe/Paris", "batch": "jobs.jsonl"},
        "broken": {"cron": "0 9 * * *", "batch": "bad.jsonl"},
    })
    with Cluster(cfg, tmp_path) as c:
        from workers.schedules import run_schedule

        def run(name: str, tick: int | None) -> dict:
            return run_schedule.apply(args=[name], kwargs={"tick": tick, "simulated": True}).get()

        first = run("inline", 1_000_020)
        assert first["status"] == "submitted" and first["jobs"] == 2
        again = run("inline", 1_000_020)
        assert again["status"] == "duplicate" and again["held"] == first["batch"]
        assert run("inline", 1_000_080)["status"] == "submitted"
        batches = scheduled_batches(c, "inline")
        assert len(batches) == 2
        from workers.runtime import get_runtime

        ids = [cid for _, cid, _, _ in get_runtime().store.results(first["batch"])]
        assert ids == ["inline-0", "own"]
        info = get_runtime().store.batch(first["batch"]) or {}
        assert info["simulated"] == "1"
        # 1 hour cron -> the batch's deadline is one period.
        assert 3590 < float(info["deadline"]) - float(info["created"]) < 3610

        assert run("file", 5)["jobs"] == 3

        with caplog.at_level(logging.ERROR, logger="dispatch.schedules"):
            bad = run("broken", 7)
        assert bad["status"] == "invalid"
        assert scheduled_batches(c, "broken") == []
        text = caplog.text
        assert str(cfg / "bad.jsonl") in text and "nothing was submitted" in text
        assert "line 2: invalid JSON" in text and "line 3:" in text and "line 1" not in text
        status = c.r.hgetall(f"{c.namespace}:schedule:broken")
        assert status["last_status"] == "invalid" and "line 2" in status["last_error"]


def test_a_tick_whose_run_died_after_submitting_makes_one_batch(tmp_path):
    """The worker died between submitting the batch and recording the tick; the broker
    redelivers the same message: the tick's batch id is derived from (schedule, tick) and
    created at most once, so the redelivery finds it instead of submitting a second."""
    cfg = sched_config(tmp_path, {"inline": {"cron": "0 * * * *", "jobs": [INLINE_JOB]}})
    with Cluster(cfg, tmp_path) as c:
        from workers.schedules import run_schedule, tick_batch_id

        def run() -> dict:
            return run_schedule.apply(args=["inline"], kwargs={"tick": 1_000_020,
                                                              "simulated": True},
                                      task_id="tick-msg").get()

        first = run()
        assert first["batch"] == tick_batch_id(c.namespace, "inline", 1_000_020)
        c.r.set(f"{c.namespace}:tick:inline:1000020", "pending:tick-msg")  # never recorded
        again = run()
        assert again["batch"] == first["batch"]
        assert len(scheduled_batches(c, "inline")) == 1
        from workers.runtime import get_runtime

        info = get_runtime().store.batch(first["batch"]) or {}
        assert info["total"] == 1  # its jobs were written once


def test_sync_creates_updates_and_deletes_redbeat_entries(tmp_path):
    from celery import current_app

    from dispatcher.config import load_config

    cfg_dir = sched_config(tmp_path, {
        "a": {"cron": "*/5 * * * *", "timezone": "Asia/Tokyo", "jobs": [INLINE_JOB]},
        "off": {"cron": "* * * * *", "enabled": False, "jobs": [INLINE_JOB]},
    })
    with Cluster(cfg_dir, tmp_path) as c:
        previous = current_app._get_current_object()
        from workers.celery_app import make_app
        from workers.schedules import ZonedEntry, sync_schedules

        app = make_app(TEST_REDIS_URL)  # picks up this test's namespace for RedBeat's keys
        try:
            assert app.conf.redbeat_key_prefix == f"{c.namespace}:redbeat:"
            stale = ZonedEntry(name="gone", task="dispatch.schedule", args=["gone"],
                               schedule=60.0, app=app)
            stale.save()
            other = ZonedEntry(name="someone-elses", task="other.task", schedule=60.0, app=app)
            other.save()
            cfg = load_config(cfg_dir)
            assert sync_schedules(cfg, app) == {"created": ["a"], "updated": [],
                                                "deleted": ["gone"]}
            entry = ZonedEntry.from_key(f"{c.namespace}:redbeat:a", app=app)
            assert str(entry.schedule.tz) == "Asia/Tokyo" and entry.args == ["a"]
            assert entry.options["queue"] == f"{c.namespace}.tag.fast"
            first_run = entry.last_run_at
            # A new entry waits for its first tick instead of firing at once.
            assert abs((datetime.now(UTC) - first_run).total_seconds()) < 10
            again = sync_schedules(cfg, app, simulated=True)
            assert again == {"created": [], "updated": ["a"], "deleted": []}
            entry = ZonedEntry.from_key(f"{c.namespace}:redbeat:a", app=app)
            assert entry.last_run_at == first_run and entry.kwargs == {"simulated": True}
            assert not c.r.exists(f"{c.namespace}:redbeat:off")
            assert c.r.exists(f"{c.namespace}:redbeat:someone-elses")
        finally:
            previous.set_current()


# -- whole processes ----------------------------------------------------------------------


def test_dispatch_up_runs_a_schedule_to_completion_and_stops_cleanly(tmp_path):
    cfg = sched_config(tmp_path, {"hello": {"cron": "0 0 1 1 *", "jobs": [INLINE_JOB] * 1}})
    with Cluster(cfg, tmp_path) as c:
        env = {**os.environ, "REDIS_URL": TEST_REDIS_URL, "DISPATCH_NAMESPACE": c.namespace,
               "DISPATCH_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "200", **FAST_BEAT}
        env.pop("DISPATCH_SIMULATOR_URL")  # `up` must bring its own simulator
        up = subprocess.Popen(
            [sys.executable, "-m", "dispatcher.cli", "up", "--simulate", "--no-flower",
             "--config", str(cfg), "--loglevel", "info"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
        try:
            done = wait_for(
                lambda: [b for b in scheduled_batches(c, "hello")
                         if b["total"] and b["completed"] == b["total"]],
                45, "a scheduled batch to complete under `dispatch up`")
            assert done[0]["simulated"] == "1"
        finally:
            up.send_signal(signal.SIGINT)
            out, _ = up.communicate(timeout=30)
        text = out.decode(errors="replace")
        assert up.returncode == 0, text
        assert "redis://127.0.0.1:6379" in text and "SIMULATED" in text
        pids = {name: int(pid) for name, pid in
                re.findall(r"^\s*(router|worker-alpha|beat)\s+(\d+)\s", text, re.M)}
        assert set(pids) == {"router", "worker-alpha", "beat"}, text
        assert "stopped." in text
        for pid in pids.values():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)  # reaped by `up`: gone, not a zombie
        assert (tmp_path / "state" / "logs" / "beat.log").exists()


def test_two_beats_send_each_tick_once_and_the_standby_takes_over(tmp_path):
    cfg = sched_config(tmp_path, {"hello": {"cron": "0 0 1 1 *", "jobs": [INLINE_JOB]}})
    with Cluster(cfg, tmp_path) as c:
        c.start_worker(name="router")  # consumes the ticks (tag queues)
        a = start_beat(c, "beat-a")
        wait_for(lambda: "Acquired lock" in c.log("beat-a"), 20, "beat A to take the lock")
        start_beat(c, "beat-b")
        wait_for(lambda: "lock ->" in c.log("beat-b") and len(ticks_sent(c, "beat-a")) >= 4,
                 25, "four ticks from beat A with B on standby")
        assert "Acquired lock" not in c.log("beat-b")
        assert ticks_sent(c, "beat-b") == []

        os.killpg(a.pid, signal.SIGKILL)  # no chance to release the lock
        killed = time.monotonic()
        wait_for(lambda: "Acquired lock" in c.log("beat-b"), LOCK_S + 10,
                 "beat B to take over")
        takeover = time.monotonic() - killed
        assert takeover <= LOCK_S + 3, f"standby took {takeover:.1f}s"
        wait_for(lambda: len(ticks_sent(c, "beat-b")) >= 2, 15, "ticks from beat B")
        b = c.procs[-1]
        os.killpg(b.pid, signal.SIGTERM)
        b.wait(timeout=15)

        sent = ticks_sent(c, "beat-a") + ticks_sent(c, "beat-b")
        # A killed beat may have started a tick it never published: those may have no batch.
        tried = ticks_tried(c, "beat-a") + ticks_tried(c, "beat-b")
        assert len(tried) == len(set(tried)), f"a tick was sent twice: {sorted(tried)}"
        gaps = [y - x for x, y in zip(sorted(tried), sorted(tried)[1:], strict=False)]
        assert min(gaps) >= EVERY_S - 1, gaps
        wait_for(lambda: len(scheduled_batches(c, "hello")) >= len(sent), 15,
                 "the router to submit every tick")
        time.sleep(0.5)
        batches = scheduled_batches(c, "hello")
        held = {k.rsplit(":", 1)[1]: c.r.get(k) for k in c.r.keys(f"{c.namespace}:tick:hello:*")}
        assert set(sent) <= set(map(int, held)) <= set(tried), (sent, held, tried)
        assert len(batches) == len(held), (len(batches), held)
        assert set(held.values()) == {b["id"] for b in batches}
