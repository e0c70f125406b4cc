"""Utilization under backlog: requests served / the most the limits allow, and over-limit.

    python bench/bench_utilization.py [--scale 6] [--calendar-scale 1.5] [--window 60]

The shipped catalog (config/) with every rolling limit x ``--scale`` (x6: about 48
requests/s allowed in all) and every calendar limit x ``--calendar-scale`` (x1.5:
OpenRouter's 75/day and Cloudflare's 15,000 neurons/day run out inside the window, so
traffic falls back), each provider's ``concurrency`` >= its request rate x the longest
latency; simulator latency uniform 200 ms - 2 s; a backlog in every tag; real worker
processes (a router, and provider workers). Providers' time zone is set to one where it
is about noon, so no calendar day ends mid-run.

After ``--warmup`` seconds, a ``--window`` of 60 s is measured (every rolling limit of the
catalog is per second or per minute, so 60 s is a whole number of each window and a
fully used limit admits exactly L x 60/T in it). The most the limits allow, per
provider: min(sum over its routed targets of min over the target's own limits, min over
the provider-wide limits) of allowed units / units per request (measured in the window,
from the simulator's usage), where a rolling limit allows L x W/T units and a calendar
limit what was left of it when the window opened. Served = requests the simulator
answered 200 in the window. Over-limit = the simulator's count over the whole run.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    RemoteSimulator,
    Workers,
    cpu_seconds,
    flush_bench_db,
    job_line,
    new_namespace,
    result_json,
    scaled_catalog,
    start_simulator,
    use_namespace,
    write_config_dir,
)

PER_S = {"second": 1, "minute": 60, "hour": 3600}
UNIT_FIELD = {"tokens": "tokens", "neurons": "neurons"}


def allowed_in_window(cfg, routed: set[str], start: dict, end: dict, window: float,
                      ledger_start: list[dict]) -> dict[str, dict[str, Any]]:
    """Per provider: the most requests the limits allow in the window, and the binding limit.

    ``start``/``end``: simulator ``stats()["targets"]`` at the window's ends.
    """
    used0 = {(x["provider"], x["model"], x["unit"], x["per"]): x["used"] for x in ledger_start}

    def delta(t: str, field: str) -> float:
        return end[t][field] - start[t][field]

    def allowed_units(provider: str, model: str | None, lim) -> float:
        per = lim.per.value
        if per in PER_S:
            return lim.limit * window / PER_S[per]
        return max(0.0, lim.limit - used0.get((provider, model, lim.unit.value, per), 0.0))

    def per_request(targets: list[str], unit: str) -> float:
        if unit == "requests":
            return 1.0
        ok = sum(delta(t, "ok") for t in targets)
        units = sum(delta(t, UNIT_FIELD[unit]) for t in targets)
        if ok <= 0 or units <= 0:  # nothing served in the window: use the whole run
            ok = sum(end[t]["ok"] for t in targets)
            units = sum(end[t][UNIT_FIELD[unit]] for t in targets)
        return units / ok if ok > 0 and units > 0 else 1.0

    out: dict[str, dict[str, Any]] = {}
    for name, pc in cfg.providers.items():
        targets = [f"{name}/{m.id}" for m in pc.models if f"{name}/{m.id}" in routed]
        if not targets:
            continue
        per_target = {}
        for t in targets:
            m = pc.model(t.split("/", 1)[1])
            best, why = math.inf, "none"
            for lim in m.limits:
                a = allowed_units(name, m.id, lim) / per_request([t], lim.unit.value)
                if a < best:
                    best, why = a, f"{t} {lim.unit.value}/{lim.per.value}"
            per_target[t] = (best, why)
        total = sum(a for a, _ in per_target.values())
        binding = "; ".join(w for _, w in per_target.values())
        for lim in pc.limits:
            a = allowed_units(name, None, lim) / per_request(targets, lim.unit.value)
            if a < total:
                total, binding = a, f"{name} {lim.unit.value}/{lim.per.value}"
        served = sum(delta(t, "ok") for t in targets)
        out[name] = {"allowed": total, "served": served, "binding": binding,
                     "targets": {t: delta(t, "ok") for t in targets}}
    return out


def backlog_lines(routes: dict[str, list[str]], per_tag: int) -> list[str]:
    lines = []
    for tag in sorted(t for t, ts in routes.items() if ts):
        for i in range(per_tag):
            lines.append(job_line(f"{tag}-{i}", tag, image=(tag == "vision")))
    return lines


SIM_PROCESS = True


def measure(cfg_dir: Path, per_tag: int, warmup: float, window: float,
            latency: tuple[float, float], start_workers, label: str) -> dict[str, Any]:
    """Run a backlog through workers started by ``start_workers(w)``; measure the window."""
    from dispatcher.batches import submit
    from dispatcher.batchfile import parse_batch
    from dispatcher.config import load_config

    flush_bench_db()
    cfg = load_config(cfg_dir, simulate=True)
    sim = RemoteSimulator(cfg_dir, latency) if SIM_PROCESS else start_simulator(cfg_dir,
                                                                                 latency)[0]
    ns = new_namespace(label)
    use_namespace(ns, cfg_dir, sim.url)
    from workers.runtime import get_runtime

    rt = get_runtime()
    rt.sim_quota.ensure_limits()
    routed = {t for ts in cfg.routes.values() for t in ts}
    specs = parse_batch(backlog_lines(cfg.routes, per_tag), cfg)
    try:
        with Workers(cfg_dir, ns, sim.url, tag=label) as w:
            start_workers(w)
            w.wait_ready(rt.r)
            t0 = time.monotonic()
            batch = submit(specs, simulated=True, deadline_s=3600)
            time.sleep(max(0.0, t0 + warmup - time.monotonic()))
            s0, l0, c0 = sim.stats(), sim.ledger.stats(), sum(cpu_seconds(p) for p in w.pids())
            time.sleep(max(0.0, t0 + warmup + window - time.monotonic()))
            s1, c1 = sim.stats(), sum(cpu_seconds(p) for p in w.pids())
            info = rt.store.batch(batch) or {}
    finally:
        sim.stop()
        flush_bench_db()
    per_provider = allowed_in_window(cfg, routed, s0["targets"], s1["targets"], window, l0)
    allowed = sum(p["allowed"] for p in per_provider.values())
    served = sum(p["served"] for p in per_provider.values())
    return {
        "served": served, "allowed": allowed, "utilization": served / allowed if allowed else 0,
        "over_limit": s1["totals"]["over_limit"], "rate_limited": s1["totals"]["rate_limited"],
        "received": s1["totals"]["received"], "providers": per_provider,
        "worker_cpu_s_in_window": c1 - c0, "window_s": window, "jobs": len(specs),
        "completed_total": info.get("completed", 0),
        "over_limit_by_limit": [x for x in s1["limits"] if x["over_limit"]],
    }


def catalog_workers(cat: dict[str, Any]):
    """A router, one worker for the busiest provider, one for all the others."""
    provs = cat["providers"]["providers"]
    busiest = max(provs, key=lambda p: provs[p]["concurrency"])
    others = [p for p in provs if p != busiest]

    def start(w: Workers) -> None:
        w.start("router", "-c", "4")
        w.start(f"prov-{busiest}", "--provider", busiest)
        w.start("prov-others", *[a for p in others for a in ("--provider", p)])
    return start


def print_report(res: dict[str, Any], title: str) -> None:
    print(f"\n{title}")
    print(f"{'provider':12s} {'served':>7s} {'allowed':>8s} {'ratio':>6s}  binding limit")
    for name, p in res["providers"].items():
        ratio = p["served"] / p["allowed"] if p["allowed"] else float("nan")
        print(f"{name:12s} {p['served']:7.0f} {p['allowed']:8.1f} {ratio:6.3f}  {p['binding']}")
    print(f"{'total':12s} {res['served']:7.0f} {res['allowed']:8.1f} {res['utilization']:6.3f}"
          f"  over-limit {res['over_limit']} (of {res['received']} received in the run); "
          f"workers used {res['worker_cpu_s_in_window']:.0f} CPU-s in the "
          f"{res['window_s']:.0f} s window")
    for x in res.get("over_limit_by_limit", []):
        print(f"  over-limit at {x['provider']}/{x['model'] or '*'} {x['unit']}/{x['per']} "
              f"(limit {x['limit']}): {x['over_limit']}")


def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=6.0)
    ap.add_argument("--calendar-scale", type=float, default=1.5)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--per-tag", type=int, default=0, help="jobs per tag (default: enough)")
    ap.add_argument("--min-latency", type=float, default=0.2)
    ap.add_argument("--max-latency", type=float, default=2.0)
    ap.add_argument("--sim-in-process", action="store_true",
                    help="run the simulator inside this process (its arrival clock then "
                         "shares a GIL with the harness)")
    opts = ap.parse_args()
    global SIM_PROCESS
    SIM_PROCESS = not opts.sim_in_process
    cat = scaled_catalog(opts.scale, opts.calendar_scale, opts.max_latency)
    # every tag could be served at up to the whole allowed rate: size each backlog for it
    per_tag = opts.per_tag or int(8.5 * opts.scale * (opts.warmup + opts.window + 10))
    with tempfile.TemporaryDirectory() as tmp:
        cfg_dir = write_config_dir(Path(tmp) / "scaled", cat)
        res = measure(cfg_dir, per_tag, opts.warmup, opts.window,
                      (opts.min_latency, opts.max_latency), catalog_workers(cat), "util")
    res.update(scale=opts.scale,
               calendar_scale=opts.calendar_scale,
               goal=0.98, met=res["utilization"] >= 0.98 and res["over_limit"] == 0)
    print_report(res, f"catalog x{opts.scale:g} (calendar x{opts.calendar_scale:g}), "
                      f"latency {opts.min_latency:g}-{opts.max_latency:g} s, "
                      f"{opts.window:g} s window after {opts.warmup:g} s")
    result_json("utilization", res)
    return res


if __name__ == "__main__":
    main()
