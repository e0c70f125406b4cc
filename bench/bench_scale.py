"""Scale: enqueue rate, Redis memory per queued job, worker RSS over a long run.

    python bench/bench_scale.py [--jobs 100000] [--run-jobs 5000]

1. JSONL validation: ``parse_batch`` on ``--jobs`` lines (lines/s).
2. Enqueue: ``JobStore.create_batch`` on the parsed specs (jobs/s), and Redis
   ``used_memory`` before/after (bytes per queued job). No workers run meanwhile.
3. Worker RSS: ``--run-jobs`` through a router + a provider worker with an instant
   upstream, RSS (process + children, /proc) sampled every second: start / middle / end.
   100,000 jobs take about half an hour at this machine's pipeline rate (see
   bench_overhead.py), so the default runs 5,000 and reports the rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_overhead import instant_config  # noqa: E402
from bench.common import (  # noqa: E402
    Workers,
    flush_bench_db,
    job_line,
    new_namespace,
    rclient,
    result_json,
    rss_mb,
    start_simulator,
    use_namespace,
)


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--run-jobs", type=int, default=5_000)
    ap.add_argument("--threads", type=int, default=8)
    opts = ap.parse_args()

    from dispatcher.batches import submit
    from dispatcher.batchfile import parse_batch
    from dispatcher.config import load_config

    out: dict = {"jobs": opts.jobs}
    flush_bench_db()
    r = rclient()
    with tempfile.TemporaryDirectory() as tmp:
        cfg_dir = instant_config(Path(tmp) / "instant", opts.threads)
        cfg = load_config(cfg_dir, simulate=True)
        lines = [job_line(f"job-{i}", "fast") for i in range(opts.jobs)]
        t = time.perf_counter()
        specs = parse_batch(lines, cfg)
        out["validate_per_s"] = opts.jobs / (time.perf_counter() - t)

        ns = new_namespace("scale")
        use_namespace(ns, cfg_dir, "http://127.0.0.1:9")
        from workers.runtime import get_runtime

        rt = get_runtime()
        rt.sim_quota.ensure_limits()
        mem0 = int(r.info("memory")["used_memory"])
        t = time.perf_counter()
        rt.store.create_batch(specs, simulated=True, deadline_s=3600)
        out["create_batch_per_s"] = opts.jobs / (time.perf_counter() - t)
        mem1 = int(r.info("memory")["used_memory"])
        out["redis_bytes_per_job"] = (mem1 - mem0) / opts.jobs
        flush_bench_db()
        print(f"validate (parse_batch): {out['validate_per_s']:,.0f} lines/s; "
              f"enqueue (create_batch): {out['create_batch_per_s']:,.0f} jobs/s "
              f"({opts.jobs:,} jobs); Redis {out['redis_bytes_per_job']:,.0f} bytes/queued job")

        # worker RSS over a run with an instant upstream
        sim, _ = start_simulator(cfg_dir, (0.0, 0.0))
        ns = new_namespace("scale-run")
        use_namespace(ns, cfg_dir, sim.url)
        rt = get_runtime()
        rt.sim_quota.ensure_limits()
        run_specs = parse_batch([job_line(f"r{i}", "fast") for i in range(opts.run_jobs)], cfg)
        samples: list[tuple[float, int, float]] = []
        try:
            with Workers(cfg_dir, ns, sim.url, tag="scale") as w:
                w.start("router", "-c", str(opts.threads))
                w.start("caller", "--provider", "instant", "-c", str(opts.threads))
                w.wait_ready(rt.r)
                t = time.perf_counter()
                batch = submit(run_specs, simulated=True, deadline_s=3600)
                out["submit_per_s"] = opts.run_jobs / (time.perf_counter() - t)
                t0 = time.monotonic()
                stop = threading.Event()
                done = 0
                while done < opts.run_jobs and time.monotonic() - t0 < 1800:
                    done = (rt.store.batch(batch) or {}).get("completed", 0)
                    samples.append((time.monotonic() - t0, done,
                                    sum(rss_mb(p) for p in w.pids())))
                    stop.wait(1.0)
                wall = time.monotonic() - t0
        finally:
            sim.stop()
            flush_bench_db()
    mid = samples[len(samples) // 2]
    out.update(run_jobs=opts.run_jobs, run_completed=samples[-1][1], run_wall_s=wall,
               run_rate=samples[-1][1] / wall, rss_start_mb=samples[0][2],
               rss_mid_mb=mid[2], rss_end_mb=samples[-1][2],
               rss_max_mb=max(s[2] for s in samples))
    print(f"run: {out['run_completed']:,}/{opts.run_jobs:,} jobs in {wall:.0f} s "
          f"({out['run_rate']:.0f} jobs/s); workers' RSS start {out['rss_start_mb']:.0f} MB, "
          f"middle {out['rss_mid_mb']:.0f} MB, end {out['rss_end_mb']:.0f} MB, "
          f"max {out['rss_max_mb']:.0f} MB")
    out["met"] = out["create_batch_per_s"] >= 10_000
    result_json("scale", out)
    return out


if __name__ == "__main__":
    main()
