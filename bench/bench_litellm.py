"""Anchor: LiteLLM's Router on the same backlog, limits and simulator, beside ours.

    python -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install litellm==1.106.2 redis
    python bench/bench_litellm.py [--rpm 60] [--window 60] \
        [--litellm-python /tmp/litellm-venv/bin/python]

Workload: one tag ("fast") with two deployments (providers ``alpha`` and ``beta``, one
model each, ``--rpm`` requests/minute each), simulator latency 200 ms - 2 s, a backlog
that never runs dry. Run three times against a fresh in-process simulator (our venv):
ours (router + provider worker processes), LiteLLM with one Router process, LiteLLM with
two Router processes sharing Redis DB 5 (``redis_url``). Each: served in a 60 s window
after a warm-up / the most the limits allow in it (2 x rpm), and the simulator's
over-limit count over the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_utilization import allowed_in_window, measure  # noqa: E402
from bench.common import (  # noqa: E402
    BENCH_REDIS_URL,
    ROOT,
    RemoteSimulator,
    flush_bench_db,
    midday_timezone,
    result_json,
    write_config_dir,
)

LATENCY = (0.2, 2.0)


def anchor_config(directory: Path, rpm: int) -> Path:
    def prov(mid: str) -> dict[str, Any]:
        return {"base_url": "https://anchor.invalid/v1", "api_key_env": "BENCH_UNUSED_KEY",
                "dialect": "openai", "timezone": midday_timezone(), "max_retries": 1,
                "concurrency": max(4, int(rpm / 60 * LATENCY[1] * 1.25) + 2), "limits": [],
                "models": [{"id": mid, "context_window": 8192, "max_output_tokens": 1024,
                            "limits": [{"unit": "requests", "limit": rpm, "per": "minute"}]}]}
    return write_config_dir(directory, {
        "providers": {"providers": {"alpha": prov("a1"), "beta": prov("b1")}},
        "routes": {"routes": {"fast": ["alpha/a1", "beta/b1"]}},
        "settings": {"routing": {"preference_delay_s": 2.0, "horizon_s": 2.0}},
    })


def run_litellm(cfg_dir: Path, rpm: int, processes: int, warmup: float, window: float,
                python: str, concurrency: int) -> dict[str, Any]:
    from dispatcher.config import load_config

    flush_bench_db()
    cfg = load_config(cfg_dir, simulate=True)
    sim = RemoteSimulator(cfg_dir, LATENCY)  # same as ours: its own process
    deps = json.dumps([{"provider": "alpha", "model": "a1", "rpm": rpm},
                       {"provider": "beta", "model": "b1", "rpm": rpm}])
    argv = [python, str(ROOT / "bench" / "litellm_client.py"), sim.url,
            str(warmup + window + 2), str(concurrency), deps]
    if processes > 1:
        argv.append(BENCH_REDIS_URL)
    procs = []
    try:
        t0 = time.monotonic()
        for _ in range(processes):
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, env={**os.environ, "LITELLM_LOG": "ERROR"}))
        # LiteLLM imports take seconds: the warm-up starts at the first arrival
        while sim.stats()["totals"]["received"] == 0 and time.monotonic() - t0 < 120:
            time.sleep(0.05)
        t1 = time.monotonic()
        time.sleep(warmup)
        s0, l0 = sim.stats(), sim.ledger.stats()
        time.sleep(max(0.0, t1 + warmup + window - time.monotonic()))
        s1 = sim.stats()
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            outs.append(out.strip().splitlines()[-1] if out.strip() else err[-500:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        sim.stop()
        flush_bench_db()
    routed = {t for ts in cfg.routes.values() for t in ts}
    per = allowed_in_window(cfg, routed, s0["targets"], s1["targets"], window, l0)
    allowed = sum(p["allowed"] for p in per.values())
    served = sum(p["served"] for p in per.values())
    return {"processes": processes, "served": served, "allowed": allowed,
            "utilization": served / allowed, "over_limit": s1["totals"]["over_limit"],
            "received": s1["totals"]["received"], "clients": outs}


def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rpm", type=int, default=60)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--concurrency", type=int, default=8, help="LiteLLM coroutines/process")
    ap.add_argument("--litellm-python", default=os.environ.get(
        "LITELLM_PYTHON", "/tmp/litellm-venv/bin/python"))
    ap.add_argument("--skip-ours", action="store_true")
    opts = ap.parse_args()
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg_dir = anchor_config(Path(tmp) / "anchor", opts.rpm)
        if not opts.skip_ours:
            def start(w) -> None:
                w.start("router", "-c", "2")
                w.start("callers", "--provider", "alpha", "--provider", "beta")
            per_tag = int(2 * opts.rpm / 60 * (opts.warmup + opts.window) * 1.5) + 50
            rows["ours"] = measure(cfg_dir, per_tag, opts.warmup, opts.window, LATENCY,
                                   start, "anchor")
        for n in (1, 2):
            rows[f"litellm x{n}"] = run_litellm(cfg_dir, opts.rpm, n, opts.warmup, opts.window,
                                                opts.litellm_python, opts.concurrency)
    print(f"\ntwo deployments x {opts.rpm} rpm, latency {LATENCY[0]}-{LATENCY[1]} s, "
          f"{opts.window:g} s window")
    print(f"{'':14s} {'served':>7s} {'allowed':>8s} {'util':>6s} {'over-limit':>10s} "
          f"{'received':>9s}")
    for name, r in rows.items():
        print(f"{name:14s} {r['served']:7.0f} {r['allowed']:8.0f} {r['utilization']:6.3f} "
              f"{r['over_limit']:10d} {r['received']:9d}")
    out = {"rpm": opts.rpm, "window_s": opts.window,
           **{k: {x: v[x] for x in ("served", "allowed", "utilization", "over_limit",
                                    "received")} for k, v in rows.items()}}
    result_json("litellm", out)
    return out


if __name__ == "__main__":
    main()
