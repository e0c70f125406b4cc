"""Pipeline overhead: jobs/s through submit -> route -> reserve -> call -> store, next to
raw Celery no-op tasks on the same Redis, same pool, same threads, same processes.

    python bench/bench_overhead.py [--jobs 4000] [--noops 12000] [--threads 8]

Ours: one provider without limits (its ``concurrency`` = the 2 x N threads), the simulator
answering at once (latency 0); two ``dispatch worker --all -P threads -c N`` processes that
route and call, as the baseline's two (``--layout split``: a router process and a provider
process instead). Baseline: two ``celery -A bench.noop_app worker
-P threads -c N`` processes with the project's Celery settings, a task that only INCRs a
counter. In both, the whole backlog is queued first, then the workers start; the rate is
measured between 10% and 90% of completions (excludes start-up and the tail).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    Workers,
    cpu_seconds,
    flush_bench_db,
    job_line,
    new_namespace,
    rclient,
    result_json,
    start_simulator,
    use_namespace,
    write_config_dir,
)


def instant_config(directory: Path, threads: int) -> Path:
    return write_config_dir(directory, {
        "providers": {"providers": {"instant": {
            "base_url": "https://instant.invalid/v1", "api_key_env": "BENCH_UNUSED_KEY",
            "dialect": "openai", "concurrency": 2 * threads, "timeout_s": 10, "max_retries": 1,
            "limits": [],
            "models": [{"id": "m", "context_window": 8192, "max_output_tokens": 1024}]}}},
        "routes": {"routes": {"fast": ["instant/m"]}},
        "settings": {"routing": {"preference_delay_s": 2.0, "horizon_s": 2.0}},
    })


def rate_between(samples: list[tuple[float, int]], total: int, lo=0.1, hi=0.9) -> float:
    """Completions/s between the lo and hi fractions of ``total`` (linear interpolation)."""
    def when(n: float) -> float:
        prev = samples[0]
        for t, c in samples:
            if c >= n:
                if c == prev[1]:
                    return t
                return prev[0] + (t - prev[0]) * (n - prev[1]) / (c - prev[1])
            prev = (t, c)
        raise RuntimeError(f"never reached {n} (last {samples[-1]})")
    a, b = when(lo * total), when(hi * total)
    return (hi - lo) * total / (b - a)


def follow(count, total: int, timeout: float) -> list[tuple[float, int]]:
    samples = [(time.monotonic(), count())]
    end = time.monotonic() + timeout
    while samples[-1][1] < total and time.monotonic() < end:
        time.sleep(0.05)
        samples.append((time.monotonic(), count()))
    if samples[-1][1] < total:
        raise RuntimeError(f"only {samples[-1][1]}/{total} done in {timeout}s")
    return samples


def run_ours(jobs: int, threads: int, tmp: Path, layout: str = "all") -> dict:
    from dispatcher.batches import submit
    from dispatcher.batchfile import parse_batch
    from dispatcher.config import load_config

    flush_bench_db()
    cfg_dir = instant_config(tmp / "instant", threads)
    sim, _ = start_simulator(cfg_dir, (0.0, 0.0))
    ns = new_namespace("ovh")
    use_namespace(ns, cfg_dir, sim.url)
    from workers.runtime import get_runtime

    rt = get_runtime()
    rt.sim_quota.ensure_limits()
    specs = parse_batch([job_line(f"j{i}", "fast") for i in range(jobs)],
                        load_config(cfg_dir, simulate=True))
    batch = submit(specs, simulated=True, deadline_s=3600)
    try:
        with Workers(cfg_dir, ns, sim.url, tag="overhead") as w:
            if layout == "all":  # two processes that route and call, like the baseline's two
                for i in range(2):
                    w.start(f"all{i}", "--all", "-c", str(threads))
            else:  # a router process and a caller process
                w.start("router", "-c", str(threads))
                w.start("caller", "--provider", "instant", "-c", str(threads))
            spies = profile_workers(w, PROFILE_DIR, "ours")
            t0 = time.monotonic()
            samples = follow(lambda: (rt.store.batch(batch) or {}).get("completed", 0),
                             jobs, timeout=600)
            cpu = sum(cpu_seconds(p) for p in w.pids())
            wall = time.monotonic() - t0
            stop_profiles(spies)
        stats = sim.stats()["totals"]
    finally:
        sim.stop()
        flush_bench_db()
    return {"rate": rate_between(samples, jobs), "jobs": jobs, "wall_s": wall,
            "worker_cpu_s": cpu, "sim_ok": stats["ok"]}


PROFILE_DIR: Path | None = None


def profile_workers(w: Workers, directory: Path | None, label: str) -> list:
    """``py-spy record`` on every worker process (collapsed stacks), if asked."""
    import shutil
    import subprocess

    if directory is None or not shutil.which("py-spy"):
        return []
    directory.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen(["py-spy", "record", "-p", str(pid), "-r", "200", "--nonblocking",
                              "--gil", "-f", "raw", "-o", str(directory / f"{label}-{name}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in zip([n for n, _ in w.procs], w.pids(), strict=True)]


def stop_profiles(spies: list) -> None:
    import signal

    for s in spies:
        s.send_signal(signal.SIGINT)
    for s in spies:
        s.wait(timeout=30)


def run_celery(n: int, threads: int) -> dict:
    flush_bench_db()
    import os

    os.environ["BENCH_NOOP_COUNTER"] = "bench:noop:done"
    from bench.noop_app import app

    r = rclient()
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            app.send_task("bench.noop", queue="bench.noop", producer=producer)
    try:
        with Workers(Path("."), new_namespace("noop"), "", tag="overhead") as w:
            for i in range(2):
                w.start_noop(f"noop{i}", threads)
            t0 = time.monotonic()
            samples = follow(lambda: int(r.get("bench:noop:done") or 0), n, timeout=600)
            cpu = sum(cpu_seconds(p) for p in w.pids())
            wall = time.monotonic() - t0
    finally:
        flush_bench_db()
    return {"rate": rate_between(samples, n), "jobs": n, "wall_s": wall, "worker_cpu_s": cpu}


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=4000)
    ap.add_argument("--noops", type=int, default=12000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--layout", choices=["all", "split"], default="all",
                    help="all: two `dispatch worker --all` processes (as the baseline's two); "
                    "split: a router process and a caller process")
    ap.add_argument("--profile", type=Path, default=None,
                    help="write py-spy collapsed stacks of our workers here")
    opts = ap.parse_args()
    global PROFILE_DIR
    PROFILE_DIR = opts.profile
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_ours(opts.jobs, opts.threads, Path(tmp), opts.layout)
        base = run_celery(opts.noops, opts.threads)
    ratio = ours["rate"] / base["rate"]
    print(f"pipeline: {ours['rate']:,.0f} jobs/s ({ours['jobs']} jobs, workers used "
          f"{ours['worker_cpu_s']:.1f} CPU-s = {1000 * ours['worker_cpu_s'] / ours['jobs']:.2f}"
          f" ms/job)")
    print(f"celery no-op: {base['rate']:,.0f} tasks/s ({base['jobs']} tasks, "
          f"{1000 * base['worker_cpu_s'] / base['jobs']:.2f} CPU-ms/task)")
    print(f"ratio: {ratio:.3f} (goal >= 0.5)")
    out = {"ours": ours, "baseline": base, "ratio": ratio, "goal": 0.5, "met": ratio >= 0.5,
           "threads": opts.threads}
    result_json("overhead", out)
    return out


if __name__ == "__main__":
    main()
