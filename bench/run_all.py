"""Run every benchmark, one after another, and print the summary table (Markdown).

    python bench/run_all.py [--only overhead,latency,...]

Each benchmark is a subprocess (its own output is passed through); their
``BENCH_RESULT {json}`` lines are collected. bench/bench_quota.py (the quota engine,
another engineer's) is run as is, on DB 5, and its own table's ratios are quoted.
bench/bench_tokens.py: token- and neuron-bound scenarios, each beside its ceiling.
Everything runs on Redis DB 5 (``BENCH_REDIS_URL``); about 12 minutes in all.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
ORDER = ["utilization", "overhead", "latency", "quota", "scale", "tokens", "litellm"]


def run(name: str, args: list[str]) -> tuple[dict, str]:
    script = ROOT / "bench" / f"bench_{name}.py"
    print(f"\n=== {script.relative_to(ROOT)} {' '.join(args)}", flush=True)
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "BENCH_REDIS_URL": REDIS})
    result: dict = {}
    text = []
    for line in proc.stdout or []:
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line[len("BENCH_RESULT "):])
        else:
            sys.stdout.write(line)
            text.append(line)
    proc.wait()
    if proc.returncode:
        print(f"!!! {name} exited {proc.returncode}")
    return result, "".join(text)


def quota_rows(text: str) -> list[tuple]:
    """Quote bench_quota.py's own Markdown table (whatever its columns): per client count,
    the engine's rate, the trivial-EVALSHA baseline and every ratio column."""
    lines = [x.strip() for x in text.splitlines() if x.strip().startswith("|")]
    if not lines:
        return []
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    out = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        row = dict(zip(head, cells, strict=False))
        engine = next((v for k, v in row.items() if "engine" in k and "/" not in k), "?")
        base = next((f"{v} ({k})" for k, v in row.items() if "trivial" in k and "/" not in k),
                    "?")
        ratios = "; ".join(f"{k}: {v}" for k, v in row.items() if "/" in k)
        out.append((f"4. Quota engine, {cells[0]} client(s) (bench_quota.py)", engine, base,
                    ratios, "see Quota engine section", None))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(ORDER))
    opts = ap.parse_args()
    todo = [x for x in ORDER if x in opts.only.split(",")]
    rows = []
    from bench.common import machine

    print(machine())
    if "utilization" in todo:
        u, _ = run("utilization", [])
        if u:
            rows.append(("1. Utilization, catalog x6 backlog (served / allowed)",
                         f"{u['utilization']:.3f}, {u['over_limit']} over-limit",
                         f"{u['allowed']:.0f} allowed in {u['window_s']:.0f} s",
                         f"{u['utilization']:.3f}", ">= 0.98, 0 over-limit", u["met"]))
    if "overhead" in todo:
        o, _ = run("overhead", [])
        if o:
            rows.append(("2. Pipeline overhead (jobs/s, instant upstream)",
                         f"{o['ours']['rate']:.0f}/s", f"{o['baseline']['rate']:.0f}/s no-op",
                         f"{o['ratio']:.2f}", ">= 0.5", o["met"]))
    if "latency" in todo:
        lat, _ = run("latency", [])
        if lat:
            rows.append(("3. Added latency enqueue -> upstream (p50 / p99)",
                         f"{lat['p50_ms']:.1f} / {lat['p99_ms']:.1f} ms",
                         f"Celery's own hop {lat['celery_hop_p50_ms']:.1f} / "
                         f"{lat['celery_hop_p99_ms']:.1f} ms",
                         f"{lat['p50_ms'] / 5:.1f}x / {lat['p99_ms'] / 25:.1f}x goal",
                         "p50 <= 5, p99 <= 25 ms", lat["met"]))
    if "quota" in todo:
        _, text = run("quota", ["--redis", REDIS])
        rows += quota_rows(text)
    if "scale" in todo:
        s, _ = run("scale", [])
        if s:
            rows.append(("5. Enqueue (JobStore.create_batch, 100k)",
                         f"{s['create_batch_per_s']:,.0f} jobs/s", "10,000/s goal",
                         f"{s['create_batch_per_s'] / 10_000:.2f}", ">= 10,000/s", s["met"]))
            rows.append(("5. JSONL validation (parse_batch, 100k)",
                         f"{s['validate_per_s']:,.0f} lines/s", "-", "-", "-", None))
            rows.append(("5. Redis memory per queued job", f"{s['redis_bytes_per_job']:,.0f} B",
                         "-", "-", "-", None))
            rows.append((f"5. Worker RSS over {s['run_completed']:,} jobs (start/mid/end)",
                         f"{s['rss_start_mb']:.0f} / {s['rss_mid_mb']:.0f} / "
                         f"{s['rss_end_mb']:.0f} MB", "-", "-", "flat", None))
    if "tokens" in todo:
        t, _ = run("tokens", [])
        for sc in t.get("scenarios", []):
            goal = 0.95 if sc["scenario"] == "max_tokens" else 0.85
            measured, against = ((sc["of_ceiling"], "of the ceiling") if goal == 0.95
                                 else (sc["share"], "of the limit"))
            rows.append((f"7. Tokens: {sc['scenario']} ({sc['limit']})",
                         f"{sc['share']:.3f} of the limit, {sc['over_limit']} over-limit",
                         f"ceiling {sc['ceiling']:.3f}", f"{sc['of_ceiling']:.3f}",
                         f">= {goal} {against}, 0 over-limit",
                         measured >= goal and sc["over_limit"] == 0))
    if "litellm" in todo:
        a, _ = run("litellm", [])
        if a:
            ours = a.get("ours")
            for n in (1, 2):
                lit = a[f"litellm x{n}"]
                rows.append((f"6. Anchor: LiteLLM Router x{n} process(es), 2 x {a['rpm']} rpm",
                             f"{ours['utilization']:.3f}, {ours['over_limit']} over-limit"
                             if ours else "-",
                             f"{lit['utilization']:.3f}, {lit['over_limit']} over-limit "
                             f"of {lit['received']}",
                             f"{ours['utilization'] / lit['utilization']:.2f}" if ours else "-",
                             "0 over-limit", (ours or {}).get("over_limit") == 0))
    print("\n| benchmark | ours | anchor / baseline | ratio | goal | met? |")
    print("|---|---|---|---|---|---|")
    for name, ours, base, ratio, goal, met in rows:
        ok = "-" if met is None else ("yes" if met else "**no**")
        print(f"| {name} | {ours} | {base} | {ratio} | {goal} | {ok} |")


if __name__ == "__main__":
    main()
