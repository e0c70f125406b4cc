"""The chaos run of issue #11, shared by ``tests/test_chaos.py`` (short, fixed seeds, no
wall-clock assertion) and ``bench/bench_chaos.py`` (long, figures for docs/benchmarks.md).

2 routers and 3 provider workers (real ``dispatch worker`` processes) on their own
``redis-server`` (AOF, ``appendfsync everysec``), the real simulator answering with random
faults (5xx, timeouts, malformed bodies, 429 with Retry-After), workers SIGKILLed and
started again, and Redis restarted (SHUTDOWN, or ``kill -9`` to measure a crash).

Recovery after a kill: the time until no job is held any more by the killed process (each
is waiting again, running elsewhere or ended), and until each is running elsewhere or ended.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

from dispatcher.local import stop_process_groups
from tests.cluster import ROOT, job_line, model, provider, write_config
from workers.simulator.faults import Fault, FaultQueue

PROVIDERS = ("pa", "pb", "pc")
FAULT_RATES = (("500", 0.03), ("503", 0.02), ("timeout", 0.02), ("malformed", 0.01),
               ("429", 0.03))


class RandomFaults(FaultQueue):
    """Each request draws a fault at the issue's rates (seeded): 5xx 5 %, timeouts 2 %,
    malformed bodies 1 %, 429 with Retry-After 3 %. Scripted faults still come first."""

    def __init__(self, seed: int, retry_after_s: float = 1.0):
        super().__init__()
        self._rng = random.Random(seed)
        self._draw = threading.Lock()
        self.retry_after_s = retry_after_s

    def take(self, provider: str, model: str) -> Fault | None:
        scripted = super().take(provider, model)
        if scripted is not None:
            return scripted
        with self._draw:
            x = self._rng.random()
        for kind, rate in FAULT_RATES:
            if x < rate:
                return Fault(kind, None, self.retry_after_s if kind == "429" else None)
            x -= rate
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    """A redis-server of our own (spare port, temp dir, AOF everysec), restartable."""

    def __init__(self, data: Path):
        self.data = data
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.data), "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", "", "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = redis.Redis(port=self.port)
        for _ in range(200):
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                if r.ping():
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def restart(self, crash: bool = False) -> float:
        """SHUTDOWN (AOF flushed) or SIGKILL, then start again; returns the seconds down."""
        down = time.monotonic()
        if crash:
            self.proc.kill()
        else:
            with contextlib.suppress(redis.ConnectionError):
                redis.Redis(port=self.port).shutdown()
        self.proc.wait(timeout=30)
        self.start()
        return time.monotonic() - down

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def chaos_config(directory: Path, lease_s: float = 12.0, renew_s: float = 3.0,
                 handout_timeout_s: float = 30.0) -> Path:
    limits = [{"unit": "requests", "limit": 8, "per": "second"},
              {"unit": "requests", "limit": 300, "per": "minute"}]
    return write_config(
        directory,
        {p: provider(model("m1", limits=limits), concurrency=4, timeout_s=2, max_retries=1)
         for p in PROVIDERS},
        {"t": [f"{p}/m1" for p in PROVIDERS]},
        {"reliability": {"lease_s": lease_s, "lease_renew_s": renew_s,
                         "handout_timeout_s": handout_timeout_s}},
    )


@dataclass
class Kill:
    name: str
    at: float
    prefix: str
    """The killed process's lease ids start with this (host:pid:)."""
    held: set[str]
    released_at: float | None = None   # none held by the dead process any more
    moving_at: float | None = None     # each running elsewhere, or ended


@dataclass
class ChaosRun:
    """One chaos run; :meth:`run` returns its figures."""

    tmp: Path
    jobs: int
    seed: int = 7
    lease_s: float = 12.0
    renew_s: float = 3.0
    handout_timeout_s: float = 30.0
    kill_every: tuple[float, float] | None = (10.0, 20.0)
    kill_at_done: tuple[int, ...] = ()
    restart_redis_at_done: int | None = None
    redis_crash: bool = False
    timeout_s: float = 600.0
    log: object = None
    kills: list[Kill] = field(default_factory=list)

    def run(self) -> dict:
        from dispatcher.config import load_config
        from workers.simulator import Simulator

        rng = random.Random(self.seed)
        cfg_dir = chaos_config(self.tmp / "config", self.lease_s, self.renew_s,
                               self.handout_timeout_s)
        server = OwnRedis(self.tmp / "redis")
        server.start()
        sim = Simulator(load_config(cfg_dir, simulate=True), latency=(0.05, 0.3),
                        seed=self.seed, timeout_hold_s=4.0)
        sim.faults = RandomFaults(self.seed)
        sim.start()
        ns = "ch" + uuid.uuid4().hex[:6]
        env = {**os.environ, "REDIS_URL": server.url, "DISPATCH_NAMESPACE": ns,
               "DISPATCH_CONFIG": str(cfg_dir), "DISPATCH_SIMULATOR_URL": sim.url,
               "DISPATCH_VISIBILITY_TIMEOUT": "600"}
        roles = {"r1": [], "r2": [], "pa": ["--provider", "pa"], "pb": ["--provider", "pb"],
                 "pc": ["--provider", "pc"]}
        procs: dict[str, subprocess.Popen[bytes]] = {}

        def start(name: str) -> None:
            log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the worker owns it
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "dispatcher.cli", "worker", *roles[name],
                 "--loglevel", "info", "--name", f"{name}-{ns}@chaos"],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                start_new_session=True)

        r = redis.Redis(port=server.port, decode_responses=True)
        started = time.monotonic()
        redis_down_s = None
        try:
            for name in roles:
                start(name)
            path = self.tmp / "chaos.jsonl"
            path.write_text("".join(job_line(f"c{i}", "t") + "\n" for i in range(self.jobs)))
            sub = subprocess.run([sys.executable, "-m", "dispatcher.cli", "submit", str(path),
                                  "--simulate"], env=env, cwd=ROOT, capture_output=True,
                                 text=True, timeout=120)
            assert sub.returncode == 0, sub.stderr
            batch = sub.stdout.strip().splitlines()[-1]
            bkey = f"{ns}:b:{{{batch}}}"
            targets = [f"{p}/m1" for p in PROVIDERS]
            next_kill = (time.monotonic() + rng.uniform(*self.kill_every)
                         if self.kill_every else None)
            kill_points = list(self.kill_at_done)
            done = 0
            end = time.monotonic() + self.timeout_s
            while time.monotonic() < end:
                try:
                    c, f = r.hmget(bkey, "completed", "failed")
                    done = int(c or 0) + int(f or 0)
                    if done >= self.jobs:
                        break
                    self._track(r, ns)
                    due = (next_kill is not None and time.monotonic() >= next_kill) or (
                        kill_points and done >= kill_points[0])
                    if due:
                        if kill_points and done >= kill_points[0]:
                            kill_points.pop(0)
                        victim = rng.choice(sorted(roles))
                        self._kill(r, ns, targets, victim, procs[victim])
                        start(victim)
                        if next_kill is not None:
                            next_kill = time.monotonic() + rng.uniform(*self.kill_every)
                    if (self.restart_redis_at_done is not None and redis_down_s is None
                            and done >= self.restart_redis_at_done):
                        redis_down_s = server.restart(crash=self.redis_crash)
                except redis.ConnectionError:
                    pass  # Redis is restarting
                time.sleep(0.2)
            with contextlib.suppress(redis.ConnectionError):
                self._track(r, ns)
            return self._figures(r, ns, batch, sim.stats(), done, started, redis_down_s)
        finally:
            stop_process_groups(list(procs.values()))
            sim.stop()
            server.stop()

    def _kill(self, r, ns: str, targets: list[str], name: str, proc) -> None:
        """SIGKILL a worker; note the jobs its process held at that moment."""
        prefix = f"{socket.gethostname()}:{proc.pid}:"
        held = set()
        for t in targets:
            for key in (f"{ns}:queued:{t}", f"{ns}:calling:{t}"):
                for jid in r.zrange(key, 0, -1):
                    if (self._holder(r, ns, jid) or "").startswith(prefix):
                        held.add(jid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.kills.append(Kill(name, time.monotonic(), prefix, held))

    @staticmethod
    def _holder(r, ns: str, jid: str) -> str | None:
        batch, _, index = jid.rpartition(":")
        return r.hget(f"{ns}:j:{{{batch}}}:{index}", "holder")

    def _track(self, r, ns: str) -> None:
        now = time.monotonic()
        for k in self.kills:
            if k.moving_at is not None:
                continue
            released = moving = True
            for jid in k.held:
                batch, _, index = jid.rpartition(":")
                state, holder = r.hmget(f"{ns}:j:{{{batch}}}:{index}", "state", "holder")
                mine = (holder or "").startswith(k.prefix)
                if mine and state in ("running", "dispatched"):
                    released = moving = False
                    break
                if state not in ("running", "completed", "failed", "expired", "cancelled"):
                    moving = False
            if released and k.released_at is None:
                k.released_at = now
            if moving:
                k.moving_at = now

    def _figures(self, r, ns: str, batch: str, stats: dict, done: int, started: float,
                 redis_down_s: float | None) -> dict:
        states: dict[str, int] = {}
        for i in range(self.jobs):
            state = r.hget(f"{ns}:j:{{{batch}}}:{i}", "state") or "missing"
            states[state] = states.get(state, 0) + 1
        info = r.hgetall(f"{ns}:b:{{{batch}}}")
        ended = sum(n for s, n in states.items()
                    if s in ("completed", "failed", "expired", "cancelled"))
        recov = [k.released_at - k.at for k in self.kills if k.released_at is not None]
        moving = [k.moving_at - k.at for k in self.kills if k.moving_at is not None]
        totals = stats["totals"]
        return {
            "jobs": self.jobs,
            "completed": int(info.get("completed") or 0),
            "failed": int(info.get("failed") or 0),
            "lost": self.jobs - ended,
            "states": states,
            "ended_twice": int(info.get("completed") or 0) + int(info.get("failed") or 0)
            - ended,
            "kills": len(self.kills),
            "killed": [k.name for k in self.kills],
            "jobs_held_at_kills": sum(len(k.held) for k in self.kills),
            "kills_not_recovered": sum(1 for k in self.kills if k.released_at is None),
            "longest_recovery_s": round(max(recov, default=0.0), 1),
            "longest_until_moving_s": round(max(moving, default=0.0), 1),
            "redis_restart": ("kill -9" if self.redis_crash else "SHUTDOWN")
            if redis_down_s is not None else None,
            "redis_down_s": round(redis_down_s, 1) if redis_down_s is not None else None,
            "upstream_requests": int(totals.get("received", 0)),
            "faults_injected": int(totals.get("errors_injected", 0)),
            "upstream_ok": int(totals.get("ok", 0)),
            "over_limit": int(totals.get("over_limit", 0)),
            "over_limit_by_limit": [
                f"{m['provider']}/{m['model']} {m['limit']} {m['unit']}/{m['per']}: "
                f"{m['over_limit']}" for m in stats["limits"] if m["over_limit"]],
            "duration_s": round(time.monotonic() - started, 1),
            "finished": done >= self.jobs,
        }
