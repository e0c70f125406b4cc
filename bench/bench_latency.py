"""Added latency: enqueue -> the upstream receives the request, with idle capacity.

    python bench/bench_latency.py [--samples 300] [--gap 0.05]

One job at a time (``dispatcher.batches.submit`` of a one-line batch, the call a client
makes), the next once the previous one arrived upstream; no limits, idle workers (a
router and a provider worker process, as deployed). The simulator runs in this process
and logs each request's arrival time (the handler wraps ``Simulator.handle``, see
bench/common.py: the simulator's own stats have no per-request times), so both ends read
the same clock. Measured: time from just before ``submit`` to that arrival.

Beside it, Celery's own hop on the same Redis with the project's Celery settings: a task
that only records when its body starts, sent with ``apply_async`` the same way one at a
time to an idle ``-P threads`` worker; its p50/p99 is the floor any design with a Celery
message between the submitter and the provider worker pays.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_overhead import instant_config  # noqa: E402
from bench.common import (  # noqa: E402
    Workers,
    flush_bench_db,
    job_line,
    new_namespace,
    result_json,
    start_simulator,
    use_namespace,
)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def celery_hop(warmup: int, samples: int, gap: float, threads: int) -> list[float]:
    """ms from before ``apply_async`` to the start of a no-op task body, idle worker."""
    import os

    from bench.common import rclient

    flush_bench_db()
    os.environ["BENCH_NOOP_COUNTER"] = "bench:noop:done"
    from bench.noop_app import stamp

    r = rclient()
    try:
        with Workers(Path("."), new_namespace("hop"), "", tag="latency") as w:
            w.start_noop("noop", threads)
            w.wait_ready(r)
            for i in range(warmup + samples):
                stamp.apply_async(args=[time.time()], queue="bench.noop")
                end = time.monotonic() + 10
                while r.llen("bench:noop:done:hops") <= i and time.monotonic() < end:
                    time.sleep(0.0005)
                time.sleep(gap)
            hops = [float(x) * 1000 for x in r.lrange("bench:noop:done:hops", warmup, -1)]
    finally:
        flush_bench_db()
    return hops


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--gap", type=float, default=0.05, help="idle seconds between jobs")
    ap.add_argument("--threads", type=int, default=8)
    opts = ap.parse_args()
    from dispatcher.batches import submit
    from dispatcher.batchfile import parse_batch
    from dispatcher.config import load_config

    flush_bench_db()
    lat: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg_dir = instant_config(Path(tmp) / "instant", opts.threads)
        cfg = load_config(cfg_dir, simulate=True)
        sim, arrivals = start_simulator(cfg_dir, (0.0, 0.0), log=True)
        ns = new_namespace("lat")
        use_namespace(ns, cfg_dir, sim.url)
        from workers.runtime import get_runtime

        rt = get_runtime()
        rt.sim_quota.ensure_limits()
        try:
            with Workers(cfg_dir, ns, sim.url, tag="latency") as w:
                w.start("router", "-c", str(opts.threads))
                w.start("caller", "--provider", "instant", "-c", str(opts.threads))
                w.wait_ready(rt.r)
                for i in range(opts.warmup + opts.samples):
                    marker = f"latency probe {i}"
                    specs = parse_batch([job_line(f"p{i}", "fast", text=marker)], cfg)
                    seen = len(arrivals.entries)
                    t0 = time.time()
                    submit(specs, simulated=True, deadline_s=600)
                    end = time.monotonic() + 10
                    arrived = None
                    while arrived is None and time.monotonic() < end:
                        for t, _, raw in arrivals.entries[seen:]:
                            if marker.encode() in raw:
                                arrived = t
                                break
                        else:
                            time.sleep(0.0005)
                    if arrived is None:
                        raise RuntimeError(f"probe {i} never reached the simulator")
                    if i >= opts.warmup:
                        lat.append((arrived - t0) * 1000)
                    time.sleep(opts.gap)
        finally:
            sim.stop()
            flush_bench_db()
    hop = celery_hop(opts.warmup, opts.samples, opts.gap, opts.threads)
    out = {"samples": len(lat), "p50_ms": pct(lat, 0.5), "p90_ms": pct(lat, 0.9),
           "p99_ms": pct(lat, 0.99), "max_ms": max(lat), "mean_ms": statistics.mean(lat),
           "celery_hop_p50_ms": pct(hop, 0.5), "celery_hop_p99_ms": pct(hop, 0.99)}
    out["met"] = out["p50_ms"] <= 5 and out["p99_ms"] <= 25
    print(f"enqueue -> upstream, {len(lat)} samples: p50 {out['p50_ms']:.1f} ms, "
          f"p90 {out['p90_ms']:.1f} ms, p99 {out['p99_ms']:.1f} ms, max {out['max_ms']:.1f} ms "
          "(goal p50 <= 5 ms, p99 <= 25 ms)")
    print(f"Celery's own hop (apply_async -> task body), {len(hop)} samples: "
          f"p50 {out['celery_hop_p50_ms']:.1f} ms, p99 {out['celery_hop_p99_ms']:.1f} ms")
    result_json("latency", out)
    return out


if __name__ == "__main__":
    main()
