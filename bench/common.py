"""Shared plumbing for the benchmarks: Redis DB 5, scaled configs, a simulator that logs
arrivals, real ``dispatch worker`` subprocesses, RSS sampling.

Not a test module: nothing under bench/ is collected by pytest (testpaths = tests).
Every benchmark owns Redis DB 5 while it runs (``FLUSHDB`` before and after, never
``FLUSHALL``): Celery's queue names are not namespaced, so runs must not share a DB.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
os.environ["REDIS_URL"] = BENCH_REDIS_URL  # before anything imports workers.celery_app
LOG_DIR = Path(os.environ.get("BENCH_LOG_DIR", tempfile.gettempdir())) / "dispatch-bench-logs"


def rclient() -> redis.Redis:
    return redis.Redis.from_url(BENCH_REDIS_URL, decode_responses=True)


def flush_bench_db() -> None:
    """Empty DB 5 (ours alone) - never another DB, never FLUSHALL."""
    r = rclient()
    assert r.connection_pool.connection_kwargs.get("db") == 5 or \
        os.environ.get("BENCH_REDIS_URL"), "benchmarks flush only DB 5"
    r.flushdb()


def midday_timezone() -> str:
    """An ``Etc/GMT±N`` zone where it is about noon now, so no calendar day ends mid-run.

    (Day limits reset at local midnight on both sides - the engine and the simulator - which
    would make the "most the limits allow" figure meaningless across a boundary.)
    """
    hour = datetime.now(UTC).hour
    offset = (12 - hour + 12) % 24 - 12  # UTC offset in hours, in [-12, 11]
    if offset == 0:
        return "Etc/GMT"
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"  # POSIX sign is inverted


# -- configuration --------------------------------------------------------------------

def load_catalog(src: Path = ROOT / "config") -> dict[str, Any]:
    return {name: yaml.safe_load((src / f"{name}.yaml").read_text()) or {}
            for name in ("providers", "routes", "settings")}


def write_config_dir(directory: Path, catalog: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("providers", "routes", "settings"):
        if catalog.get(name) is not None:
            (directory / f"{name}.yaml").write_text(yaml.safe_dump(catalog[name],
                                                                   sort_keys=False))
    return directory


def scaled_catalog(rolling_x: float, calendar_x: float, max_latency_s: float,
                   tz: str | None = None) -> dict[str, Any]:
    """The shipped catalog with rolling limits x ``rolling_x``, calendar ones x ``calendar_x``,
    each provider's ``concurrency`` >= its allowed request rate x the longest latency."""
    cat = copy.deepcopy(load_catalog())
    tz = tz or midday_timezone()
    for pc in cat["providers"]["providers"].values():
        pc["timezone"] = tz
        pc["max_retries"] = 1
        rate = 0.0
        for lim in [*(pc.get("limits") or []),
                    *(x for m in pc["models"] for x in (m.get("limits") or []))]:
            rolling = lim["per"] in ("second", "minute", "hour")
            lim["limit"] = max(1, int(round(lim["limit"] * (rolling_x if rolling else
                                                            calendar_x))))
        # the request rate the provider could ever be asked for: provider-wide request
        # limit if any, else the sum of its models' request limits
        def req_rate(limits: list[dict]) -> float | None:
            per_s = {"second": 1, "minute": 60, "hour": 3600}
            rates = [x["limit"] / per_s[x["per"]] for x in limits
                     if x["unit"] == "requests" and x["per"] in per_s]
            return min(rates) if rates else None
        shared = req_rate(pc.get("limits") or [])
        own = [req_rate(m.get("limits") or []) for m in pc["models"]]
        rate = shared if shared is not None else sum(r or 0 for r in own)
        pc["concurrency"] = min(256, max(4, int(rate * max_latency_s * 1.25) + 2))
    return cat


# -- simulator ------------------------------------------------------------------------

class ArrivalLog:
    """Wraps ``Simulator.handle`` to record (arrival time, path, body) of every request.

    Arrival = the moment the simulator's handler has the request in hand (after reading
    the body), on this machine's clock - the same clock the submitting process uses.
    """

    def __init__(self, sim):
        self.sim = sim
        self.entries: list[tuple[float, str, bytes]] = []
        self._lock = threading.Lock()
        real = sim.handle

        def handle(method, path, headers, raw):
            t = time.time()
            with self._lock:
                self.entries.append((t, path, raw))
            return real(method, path, headers, raw)

        sim.handle = handle


def start_simulator(config_dir: Path, latency: tuple[float, float], log: bool = False):
    from dispatcher.config import load_config
    from workers.simulator import Simulator

    sim = Simulator(load_config(config_dir, simulate=True), latency=latency, seed=1).start()
    arrivals = ArrivalLog(sim) if log else None
    return sim, arrivals


class RemoteSimulator:
    """``dispatch simulate`` in its own process: its arrival clock does not share a GIL with
    the benchmark (a real upstream is another machine). Same ``url``/``stats()``/``stop()``
    as :class:`workers.simulator.Simulator`; ``ledger.stats()`` is the per-limit part."""

    def __init__(self, config_dir: Path, latency: tuple[float, float]):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        lo, hi = (int(x * 1000) for x in latency)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = open(LOG_DIR / "simulator.log", "wb")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispatcher.cli", "simulate", "--config", str(config_dir),
             "--port", str(port), "--latency-ms", f"{lo}-{hi}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        import httpx

        for _ in range(200):
            try:
                httpx.get(f"{self.url}/_sim/stats", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        self.ledger = _RemoteLedger(self)

    def stats(self) -> dict[str, Any]:
        import httpx

        return httpx.get(f"{self.url}/_sim/stats", timeout=30).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class _RemoteLedger:
    """The per-limit counters (``Simulator.ledger.stats()``) of a remote simulator."""

    def __init__(self, sim: RemoteSimulator):
        self.sim = sim

    def stats(self) -> list[dict[str, Any]]:
        return self.sim.stats()["limits"]


# -- workers --------------------------------------------------------------------------

class Workers:
    """``dispatch worker`` subprocesses on DB 5, one namespace; stopped on exit."""

    def __init__(self, config_dir: Path, namespace: str, sim_url: str, tag: str = "bench"):
        self.config_dir = config_dir
        self.namespace = namespace
        self.sim_url = sim_url
        self.tag = tag
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        LOG_DIR.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        return {**os.environ, "REDIS_URL": BENCH_REDIS_URL,
                "DISPATCH_NAMESPACE": self.namespace,
                "DISPATCH_CONFIG": str(self.config_dir),
                "DISPATCH_SIMULATOR_URL": self.sim_url,
                "PYTHONPATH": str(ROOT)}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(LOG_DIR / f"{self.tag}-{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "dispatcher.cli", "worker", *args, "--loglevel", "warning",
             "--name", f"{name}-{self.namespace}@bench"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=ROOT,
            start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def start_raw(self, name: str, argv: list[str], env: dict | None = None):
        log = open(LOG_DIR / f"{self.tag}-{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                env=env or self.env(), cwd=ROOT, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def start_noop(self, name: str, threads: int) -> subprocess.Popen[bytes]:
        """The baseline: a plain Celery worker of ``bench.noop_app`` (the project's Celery
        settings, no dispatch code), ``-P threads -c threads`` on the ``bench.noop`` queue."""
        env = {**os.environ, "REDIS_URL": BENCH_REDIS_URL, "PYTHONPATH": str(ROOT)}
        return self.start_raw(name, [
            sys.executable, "-m", "celery", "-A", "bench.noop_app", "worker", "-Q",
            "bench.noop", "-P", "threads", "-c", str(threads), "-n",
            f"{name}-{self.namespace}@bench", "-l", "warning", "--without-gossip",
            "--without-mingle"], env=env)

    def pids(self) -> list[int]:
        return [p.pid for _, p in self.procs]

    def wait_ready(self, r: redis.Redis, timeout: float = 40.0) -> None:
        """Until every worker answers a Celery ping (they consume by then)."""
        from celery import Celery

        app = Celery(broker=BENCH_REDIS_URL, backend=BENCH_REDIS_URL)
        want = {f"{name}-{self.namespace}@bench" for name, _ in self.procs}
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for name, p in self.procs:
                if p.poll() is not None:
                    log = (LOG_DIR / f"{self.tag}-{name}.log").read_text()
                    raise RuntimeError(f"worker {name} exited: {log[-2000:]}")
            got = {k for d in (app.control.ping(timeout=0.5) or []) for k in d}
            if want <= got:
                return
        raise RuntimeError(f"workers not ready after {timeout}s: {want - got}")

    def stop(self) -> None:
        from dispatcher.local import stop_process_groups

        stop_process_groups([proc for _, proc in self.procs])
        self.procs.clear()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def new_namespace(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:6]}"


def use_namespace(ns: str, config_dir: Path, sim_url: str | None = None) -> None:
    """Point this process's runtime (submit, store reads) at a namespace and config."""
    from workers.runtime import reset_runtime

    os.environ["DISPATCH_NAMESPACE"] = ns
    os.environ["DISPATCH_CONFIG"] = str(config_dir)
    if sim_url:
        os.environ["DISPATCH_SIMULATOR_URL"] = sim_url
    reset_runtime()


# -- jobs -----------------------------------------------------------------------------

PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNg"
       "YPj/HwADAQH/3kqRWQAAAABJRU5ErkJggg==")


def job_line(custom_id: str, model: str, text: str = "Say hello to the benchmark, briefly.",
             max_tokens: int = 32, image: bool = False) -> str:
    content: Any = text
    if image:
        content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": PNG}}]
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": model, "max_tokens": max_tokens,
                                "messages": [{"role": "user", "content": content}]}},
                      separators=(",", ":"))


# -- process sampling -------------------------------------------------------------------

def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (MB), from /proc."""
    total = 0
    for p in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def _children(pid: int) -> list[int]:
    out = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                kids = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
                for k in kids:
                    out += [int(k), *_children(int(k))]
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its children), seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in [pid, *_children(pid)]:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    r = rclient()
    return (f"{os.cpu_count()} cores ({cpu}); Python {sys.version.split()[0]}; "
            f"Redis {r.info('server')['redis_version']}")


def result_json(name: str, data: dict[str, Any]) -> None:
    """Print one machine-readable line (run_all.py collects them)."""
    print("BENCH_RESULT " + json.dumps({"bench": name, **data}), flush=True)
