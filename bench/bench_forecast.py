"""The forecast against the truth: `dispatch plan`'s prediction at submit vs the real end.

    python bench/bench_forecast.py [--only reset,fallback,behind] [--latency 0.2]

Three scenarios, each a real batch on the simulator served by a real `dispatch worker
--all` process, limits scaled so a run takes about a minute:

- ``reset``: 35 jobs on a provider whose day limit (20 requests) is spent at once; its zone is
  a fixed UTC offset chosen so that local midnight falls about 40 s into the run; the rest
  of the batch goes after the reset, paced by the 30 requests/minute window.
- ``fallback``: the preferred target's day limit (30 requests) runs out and the traffic
  falls back to a second target at 20 requests/minute.
- ``behind``: a low-priority batch submitted behind a normal one of 50 jobs, one target
  at 40 requests/minute.
- ``reserve`` (not a forecast): a batch stops at a day limit's reserve and interactive
  requests still get through (``run_reserve``).
- ``tokens``: a tokens/minute limit where jobs ask for ``max_tokens`` 300 but replies are
  32 tokens: a job starts when its estimate fits, the window keeps what was used; the
  forecast learns the typical reply from the usage records of 5 earlier jobs.

For each, the forecast is made right before the batch is submitted (the same code as
``dispatch plan`` and the line ``submit`` prints: `dispatcher.forecast_state.plan`), from
the same Redis; the actual end is when the last job of the batch ended (polled every
20 ms). Error = (forecast end - actual end) / actual duration (submit to end); the goal is
within +-10 %. Every run's over-limit count comes from the simulator (must be 0).

Redis DB 11 (``BENCH_REDIS_URL``: the other benchmarks flush DB 5), in a namespace of its
own that is deleted at the end (no FLUSHDB).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# A database of its own: the other benchmarks FLUSHDB their DB 5 before and after a run,
# which would wipe a forecast run sharing it on a shared machine.
os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")

from bench.common import (  # noqa: E402
    Workers,
    job_line,
    machine,
    new_namespace,
    rclient,
    result_json,
    start_simulator,
    use_namespace,
    write_config_dir,
)

GOAL = 0.10


def offset_for_midnight_at(t: float) -> str:
    """A fixed UTC offset (``"+HH:MM"``) whose local midnight is the whole minute at or
    after ``t``; returns the offset text (and the midnight is ``ceil_minute(t)``)."""
    minute_of_day = int(-(-t // 60)) % 1440
    off = (1440 - minute_of_day) % 1440
    if off > 720:
        off -= 1440
    sign = "+" if off >= 0 else "-"
    return f"{sign}{abs(off) // 60:02d}:{abs(off) % 60:02d}"


def _provider(limits: list[dict], tz: str = "UTC", concurrency: int = 8) -> dict:
    return {"base_url": "https://bench.invalid/v1", "api_key_env": "BENCH_UNUSED_KEY",
            "timezone": tz, "concurrency": concurrency, "timeout_s": 10, "max_retries": 1,
            "limits": [], "models": [{"id": "m", "context_window": 8192,
                                      "max_output_tokens": 1024, "limits": limits}]}


def _rpm(n: int) -> dict:
    return {"unit": "requests", "limit": n, "per": "minute"}


def _rpd(n: int) -> dict:
    return {"unit": "requests", "limit": n, "per": "day"}


def scenarios(latency: float) -> dict[str, dict[str, Any]]:
    # The reset scenario needs its zone at start time: midnight ~40 s after the batch is
    # submitted (workers take a few seconds to start: aim at ~55 s from now).
    reset_tz = offset_for_midnight_at(time.time() + 55)
    return {
        "reset": {
            "providers": {"a": _provider([_rpm(30), _rpd(20)], tz=reset_tz)},
            "routes": {"fast": ["a/m"]},
            "batches": [("fast", 35, "normal")],
            "note": f"a: 30 req/min, 20 req/day, zone {reset_tz}",
        },
        "fallback": {
            "providers": {"a": _provider([_rpm(60), _rpd(30)]), "b": _provider([_rpm(20)])},
            "routes": {"fast": ["a/m", "b/m"]},
            "batches": [("fast", 60, "normal")],
            "note": "a: 60 req/min, 30 req/day, then b: 20 req/min",
        },
        "behind": {
            "providers": {"a": _provider([_rpm(40)])},
            "routes": {"fast": ["a/m"]},
            "batches": [("fast", 50, "normal"), ("fast", 20, "low")],
            "note": "a: 40 req/min; 50 normal jobs queued, then 20 low",
        },
        "tokens": {
            "providers": {"a": _provider([{"unit": "tokens", "limit": 3000, "per": "minute"}])},
            "routes": {"fast": ["a/m"]},
            "warmup": 5,
            "max_tokens": 300,
            "batches": [("fast", 80, "normal")],
            "note": "a: 3,000 tokens/min; max_tokens 300, replies of 32 tokens",
        },
    }


def run_scenario(name: str, spec: dict[str, Any], latency: float,
                 workdir: Path) -> list[dict[str, Any]]:
    from dispatcher.batches import submit
    from dispatcher.batchfile import parse_batch
    from dispatcher.config import load_config
    from dispatcher.forecast import summary
    from dispatcher.forecast_state import plan
    from workers.runtime import get_runtime

    cfg_dir = write_config_dir(workdir / name, {
        "providers": {"providers": spec["providers"]},
        "routes": {"routes": spec["routes"]},
        "settings": {"forecast": {"latency_s": latency},
                     "routing": {"preference_delay_s": 2.0, "horizon_s": 2.0}},
    })
    cfg = load_config(cfg_dir, simulate=True)
    ns = new_namespace(f"fc-{name}")
    sim, _ = start_simulator(cfg_dir, (latency, latency))
    rows: list[dict[str, Any]] = []
    try:
        use_namespace(ns, cfg_dir, sim.url)
        rt = get_runtime()
        with Workers(cfg_dir, ns, sim.url, tag=f"forecast-{name}") as workers:
            workers.start("all", "--all")
            workers.wait_ready(rclient())
            max_tokens = spec.get("max_tokens", 16)
            if spec.get("warmup"):  # usage history: what replies typically cost
                warm = parse_batch([job_line(f"warm-{k}", spec["batches"][0][0],
                                             max_tokens=max_tokens)
                                    for k in range(spec["warmup"])], cfg)
                _wait(rt, [submit(warm, simulated=True, deadline_s=900)])
            ids = []
            for i, (tag, n, priority) in enumerate(spec["batches"]):
                lines = [job_line(f"{name}-{i}-{k}", tag, max_tokens=max_tokens)
                         for k in range(n)]
                specs = parse_batch(lines, cfg)
                f = plan(cfg, specs, True, priority, rt.r, ns)
                t0 = time.time()
                bid = submit(specs, simulated=True, deadline_s=900, priority=priority)
                ids.append((bid, t0, f, n, priority))
            ends = _wait(rt, [bid for bid, *_ in ids])
            stats = sim.stats()
        for bid, t0, f, n, priority in ids:
            info = rt.store.batch(bid) or {}
            end = ends.get(bid)
            actual = (end - t0) if end else None
            predicted = (f.finish_at - t0) if f.finish_at else None
            err = (predicted - actual) / actual if actual and predicted is not None else None
            rows.append({
                "scenario": name, "batch_jobs": n, "priority": priority,
                "note": spec["note"], "ahead": f.ahead,
                "forecast_s": round(predicted, 2) if predicted is not None else None,
                "actual_s": round(actual, 2) if actual else None,
                "error": round(err, 4) if err is not None else None,
                "within_goal": err is not None and abs(err) <= GOAL,
                "forecast_targets": f.targets,
                "actual_targets": info.get("providers", {}),
                "failed": info.get("failed"),
                "over_limit": stats["totals"].get("over_limit", 0),
                "summary": summary(f),
            })
    finally:
        sim.stop()
        r = rclient()
        for key in r.scan_iter(f"{ns}*", count=1000):
            r.delete(key)
    return rows


def _wait(rt: Any, batches: list[str], timeout: float = 200) -> dict[str, float]:
    """When each batch ended (polled every 20 ms), for those that did within ``timeout``."""
    ends: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(ends) < len(batches) and time.monotonic() < deadline:
        for bid in batches:
            info = rt.store.batch(bid) or {}
            if bid not in ends and info and info["completed"] + info["failed"] >= info["total"]:
                ends[bid] = time.time()
        time.sleep(0.02)
    return ends


def run_reserve(latency: float, workdir: Path) -> dict[str, Any]:
    """A day limit of 40 requests keeping 25 % for interactive use: a 40-job batch must stop
    at 30, and 10 interactive requests (reserved with class "interactive", then sent to
    the simulator, which enforces the whole limit) must still get through; an 11th not."""
    import httpx

    from dispatcher.batches import cancel, submit
    from dispatcher.batchfile import parse_batch
    from dispatcher.config import load_config
    from workers.quota.costs import Cost
    from workers.runtime import get_runtime

    limits = [_rpm(60), {**_rpd(40), "reserve": {"share": 0.25, "for": "interactive"}}]
    cfg_dir = write_config_dir(workdir / "reserve", {
        "providers": {"providers": {"a": _provider(limits)}},
        "routes": {"routes": {"fast": ["a/m"]}},
        "settings": {"forecast": {"latency_s": latency}}})
    cfg = load_config(cfg_dir, simulate=True)
    ns = new_namespace("fc-reserve")
    sim, _ = start_simulator(cfg_dir, (latency, latency))
    try:
        use_namespace(ns, cfg_dir, sim.url)
        rt = get_runtime()
        with Workers(cfg_dir, ns, sim.url, tag="forecast-reserve") as workers:
            workers.start("all", "--all")
            workers.wait_ready(rclient())
            specs = parse_batch([job_line(f"r{k}", "fast") for k in range(40)], cfg)
            bid = submit(specs, simulated=True, deadline_s=900)
            end = time.monotonic() + 60
            while (rt.store.batch(bid) or {}).get("completed", 0) < 30 and \
                    time.monotonic() < end:
                time.sleep(0.05)
            time.sleep(3.0)  # long enough for any 31st job to have gone (none may)
            batch_done = rt.store.batch(bid)["completed"]
            engine, target = rt.quota(True), cfg.target("a/m")
            answered, refused = 0, None
            for i in range(11):
                res = engine.reserve(target, Cost(1, 64), klass="interactive")
                if not res.granted:
                    refused = i + 1
                    break
                reply = httpx.post(f"{sim.url}/a/v1/chat/completions", timeout=30,
                                   headers={"Authorization": "Bearer simulated"}, json={
                    "model": "m", "max_tokens": 16,
                    "messages": [{"role": "user", "content": f"interactive {i}"}]})
                answered += reply.status_code == 200
            cancel(bid)
            stats = sim.stats()
    finally:
        sim.stop()
        r = rclient()
        for key in r.scan_iter(f"{ns}*", count=1000):
            r.delete(key)
    return {"batch_jobs": 40, "batch_served": batch_done, "interactive_answered": answered,
            "interactive_refused_at": refused,
            "upstream_answered": stats["targets"]["a/m"]["ok"],
            "over_limit": stats["totals"].get("over_limit", 0)}


def main() -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="reset,fallback,behind,tokens,reserve")
    ap.add_argument("--latency", type=float, default=0.2,
                    help="simulator latency (s), also the forecast's latency_s")
    args = ap.parse_args()
    wanted = args.only.split(",")
    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-forecast-") as tmp:
        reserve = run_reserve(args.latency, Path(tmp)) if "reserve" in wanted else None
        for name in wanted:
            if name == "reserve":
                continue
            spec = scenarios(args.latency)[name]  # built now: the reset's zone needs "now"
            got = run_scenario(name, spec, args.latency, Path(tmp))
            for row in got:
                print(f"{row['scenario']:9} {row['batch_jobs']:3} jobs {row['priority']:6} "
                      f"forecast {row['forecast_s']}s actual {row['actual_s']}s "
                      f"error {_pct(row['error'])} | {row['summary']}", flush=True)
            rows += got
    print()
    print("| scenario | limits | batch | forecast at submit | actual | error | within ±10 % |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['scenario']} | {row['note']} | {row['batch_jobs']} jobs, "
              f"{row['priority']}, {row['ahead']} ahead | {row['forecast_s']} s "
              f"({_targets(row['forecast_targets'])}) | {row['actual_s']} s "
              f"({_targets(row['actual_targets'])}) | {_pct(row['error'])} | "
              f"{'yes' if row['within_goal'] else '**no**'} |")
    if reserve:
        print(f"\nreserve: a 40-job batch on 40 requests/day keeping 25 %: the batch got "
              f"{reserve['batch_served']}, then {reserve['interactive_answered']} interactive "
              f"requests were answered and #{reserve['interactive_refused_at']} was refused; "
              f"upstream answered {reserve['upstream_answered']}, over-limit "
              f"{reserve['over_limit']}")
    result_json("forecast", {"rows": rows, "reserve": reserve})
    return rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1%}"


def _targets(d: dict[str, int]) -> str:
    return ", ".join(f"{k.split('/')[0]} {v}" for k, v in sorted(d.items()))


if __name__ == "__main__":
    main()
