"""A provider bound by its ``concurrency`` alone: calls in flight kept at the limit.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 python bench/bench_concurrency.py \\
        [--jobs 200] [--concurrency 4] [--latency 0.2]

One provider without rate limits, ``concurrency`` C, the simulator answering in a fixed
``latency`` (its own process); ``routing.chain_max_jobs: 1`` so that every job is handed
out by the pump (no call task carries its slot over to the next job: what happens when
chains end or several waiting sets share a target). A router and the provider's worker
(``dispatch worker``), the whole batch submitted at once. Measured: completions/s between
10 % and 90 % of the batch, over the most the limit allows (C / latency), and the
simulator's largest number of calls in flight (must never exceed C).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_overhead import rate_between  # noqa: E402
from bench.common import (  # noqa: E402
    RemoteSimulator,
    Workers,
    flush_bench_db,
    job_line,
    machine,
    new_namespace,
    result_json,
    use_namespace,
    write_config_dir,
)


def config(directory: Path, concurrency: int) -> Path:
    return write_config_dir(directory, {
        "providers": {"providers": {"slow": {
            "base_url": "https://slow.invalid/v1", "api_key_env": "BENCH_UNUSED_KEY",
            "dialect": "openai", "concurrency": concurrency, "timeout_s": 30,
            "max_retries": 1, "limits": [],
            "models": [{"id": "m", "context_window": 8192, "max_output_tokens": 1024}]}}},
        "routes": {"routes": {"fast": ["slow/m"]}},
        "settings": {"routing": {"chain_max_jobs": 1}},
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.2)
    opts = ap.parse_args()
    from dispatcher.batches import submit
    from dispatcher.batchfile import parse_batch
    from dispatcher.config import load_config

    print(f"machine: {machine()}", flush=True)
    flush_bench_db()
    with tempfile.TemporaryDirectory() as tmp:
        cfg_dir = config(Path(tmp) / "conc", opts.concurrency)
        cfg = load_config(cfg_dir, simulate=True)
        sim = RemoteSimulator(cfg_dir, (opts.latency, opts.latency))
        ns = new_namespace("conc")
        use_namespace(ns, cfg_dir, sim.url)
        from workers.runtime import get_runtime

        rt = get_runtime()
        rt.sim_quota.ensure_limits()
        try:
            with Workers(cfg_dir, ns, sim.url, tag="concurrency") as w:
                w.start("router", "-c", "8")
                w.start("caller", "--provider", "slow", "-c", str(2 * opts.concurrency))
                w.wait_ready(rt.r)
                specs = parse_batch([job_line(f"j{i}", "fast") for i in range(opts.jobs)], cfg)
                submit(specs, simulated=True, deadline_s=3600)
                samples: list[tuple[float, int]] = []
                end = time.monotonic() + 30 + 4 * opts.jobs * opts.latency
                while time.monotonic() < end:
                    stats = sim.stats()
                    done = int(stats["totals"].get("ok", 0))
                    samples.append((time.monotonic(), done))
                    if done >= opts.jobs:
                        break
                    time.sleep(0.05)
                stats = sim.stats()
        finally:
            sim.stop()
            flush_bench_db()
    rate = rate_between(samples, opts.jobs)
    ceiling = opts.concurrency / opts.latency
    result_json("concurrency", {
        "jobs": opts.jobs, "concurrency": opts.concurrency, "latency_s": opts.latency,
        "rate": round(rate, 2), "ceiling": ceiling, "of_ceiling": round(rate / ceiling, 3),
        "max_in_flight": stats["totals"].get("max_in_flight"),
    })


if __name__ == "__main__":
    main()
