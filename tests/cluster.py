"""A real dispatch cluster for end-to-end tests: Redis, Celery worker processes, simulator.

Nothing is mocked: workers are ``dispatch worker`` subprocesses consuming real Celery
queues on the real Redis, calling the real HTTP simulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import yaml

from dispatcher.local import stop_process_groups

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_URL = os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/3")


def write_config(directory: Path, providers: dict, routes: dict,
                 settings: dict | None = None, schedules: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "providers.yaml").write_text(yaml.safe_dump({"providers": providers}))
    (directory / "routes.yaml").write_text(yaml.safe_dump({"routes": routes}))
    if settings is not None:
        (directory / "settings.yaml").write_text(yaml.safe_dump(settings))
    if schedules is not None:
        (directory / "schedules.yaml").write_text(yaml.safe_dump({"schedules": schedules}))
    return directory


def model(mid: str, **extra: Any) -> dict:
    return {"id": mid, "context_window": 8192, "max_output_tokens": 1024, **extra}


def provider(*models: dict, dialect: str = "openai", limits: list | None = None,
             **extra: Any) -> dict:
    return {
        "base_url": "https://example.invalid/v1",
        "api_key_env": "TEST_UNUSED_KEY",
        "dialect": dialect,
        "limits": limits or [],
        "models": list(models),
        "concurrency": 4,
        "timeout_s": 5,
        "max_retries": 1,
        **extra,
    }


def job_line(custom_id: str, model_or_tag: str, text: str = "hello", **body: Any) -> str:
    return json.dumps({
        "custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": model_or_tag, "messages": [{"role": "user", "content": text}],
                 "max_tokens": 16, **body},
    })


class Cluster:
    """Start/stop workers and the simulator around one test config and namespace."""

    def __init__(self, config_dir: Path, tmp: Path, latency: tuple[float, float] = (0.0, 0.0),
                 visibility_timeout: int = 60):
        self.config_dir = config_dir
        self.tmp = tmp
        self.namespace = "t" + uuid.uuid4().hex[:8]
        self.latency = latency
        self.vt = visibility_timeout
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sim = None
        self.r = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> Cluster:
        from dispatcher.config import load_config
        from workers.runtime import reset_runtime
        from workers.simulator import Simulator

        os.environ["DISPATCH_NAMESPACE"] = self.namespace
        os.environ["DISPATCH_CONFIG"] = str(self.config_dir)
        reset_runtime()
        self.sim = Simulator(load_config(self.config_dir, simulate=True),
                             latency=self.latency).start()
        os.environ["DISPATCH_SIMULATOR_URL"] = self.sim.url
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process_groups(self.procs)
        if self.sim is not None:
            self.sim.stop()
        from workers.liveness import stop_all
        from workers.runtime import reset_runtime

        stop_all()  # this process's leases (a submit hands jobs out), before the cleanup
        reset_runtime()
        os.environ.pop("DISPATCH_SIMULATOR_URL", None)
        for key in self.r.scan_iter(f"{self.namespace}*", count=1000):
            self.r.delete(key)

    def start_worker(self, *args: str, name: str | None = None) -> subprocess.Popen[bytes]:
        env = {**os.environ, "REDIS_URL": TEST_REDIS_URL,
               "DISPATCH_NAMESPACE": self.namespace,
               "DISPATCH_CONFIG": str(self.config_dir),
               "DISPATCH_SIMULATOR_URL": self.sim.url,
               "DISPATCH_VISIBILITY_TIMEOUT": str(self.vt)}
        name = name or f"w{len(self.procs)}"
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it
        proc = subprocess.Popen(
            [sys.executable, "-m", "dispatcher.cli", "worker", *args, "--loglevel", "info",
             "--name", f"{name}-{self.namespace}@test"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    # -- jobs --------------------------------------------------------------------
    def submit(self, lines: list[str], deadline_s: float = 600) -> str:
        from dispatcher.batches import submit
        from dispatcher.batchfile import parse_batch
        from dispatcher.config import load_config

        cfg = load_config(self.config_dir, simulate=True)
        return submit(parse_batch(lines, cfg), simulated=True, deadline_s=deadline_s)

    def batch(self, batch: str) -> dict:
        from workers.runtime import get_runtime

        return get_runtime().store.batch(batch) or {}

    def wait(self, batch: str, timeout: float = 60) -> list[dict]:
        from dispatcher.batches import result_lines

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            info = self.batch(batch)
            if info and info["completed"] + info["failed"] >= info["total"]:
                return list(result_lines(batch))
            time.sleep(0.1)
        raise AssertionError(f"batch {batch} did not finish in {timeout}s: {self.batch(batch)}")

    @staticmethod
    def wait_for(probe, timeout: float = 60, what: str = "a condition", every: float = 0.1):
        """Poll ``probe`` until it returns something truthy (returned) or fail after
        ``timeout`` seconds: a condition, never a fixed sleep."""
        end = time.monotonic() + timeout
        while True:
            got = probe()
            if got:
                return got
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(every)

    def stats(self) -> dict:
        return self.sim.stats()
