"""Following a batch: a rich progress bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from statistics import quantiles

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dispatcher.waiting import StallWatch

POLL_S = 0.25
PLAIN_EVERY_S = 5.0


def _providers(info: dict) -> str:
    return " ".join(f"{p}={n}" for p, n in sorted(info.get("providers", {}).items()))


def follow_batch(rt, batch: str, console: Console,
                 dead_workers: Callable[[], list] = lambda: []) -> bool:
    """Block until every job of ``batch`` ended. False if the local workers died first."""
    info = rt.store.batch(batch)
    total = info["total"] if info else 0
    start = time.monotonic()
    stall = StallWatch(rt, batch)  # says why, once no job moved for a minute
    if console.is_terminal:
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}/s"), TimeRemainingColumn(),
                   TextColumn("{task.fields[providers]}"))
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("jobs", total=total, rate="0.0", providers="")
            while True:
                info = rt.store.batch(batch) or {}
                done = info.get("completed", 0) + info.get("failed", 0)
                rate = done / max(1e-9, time.monotonic() - start)
                bar.update(task, completed=done, rate=f"{rate:.1f}", providers=_providers(info))
                if note := stall.check(done):
                    console.print(note, highlight=False)
                if done >= total:
                    return True
                if dead_workers():
                    return False
                time.sleep(POLL_S)
    last_print = 0.0
    while True:
        info = rt.store.batch(batch) or {}
        done = info.get("completed", 0) + info.get("failed", 0)
        now = time.monotonic()
        if note := stall.check(done):
            console.print(note, highlight=False)
        if done >= total or now - last_print >= PLAIN_EVERY_S:
            elapsed = now - start
            rate = done / max(1e-9, elapsed)
            eta = f"{(total - done) / rate:.0f}s" if rate > 0 else "?"
            console.print(f"progress: {done}/{total} done ({info.get('failed', 0)} failed) "
                          f"{rate:.1f}/s eta {eta} {_providers(info)}", highlight=False)
            last_print = now
        if done >= total:
            return True
        if dead_workers():
            return False
        time.sleep(POLL_S)


def summary_table(rt, batch: str) -> Table:
    """Per provider/model: jobs, failures, tokens, p50/p95 latency."""
    rows: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "failed": 0, "tokens": 0, "lat": []})
    for _, _, state, result in rt.store.results(batch):
        d = (result or {}).get("dispatch") or {}
        key = f"{d.get('provider')}/{d.get('model')}" if d.get("provider") else "(no target)"
        row = rows[key]
        row["jobs"] += 1
        row["failed"] += state != "completed"
        usage = d.get("usage") or {}
        row["tokens"] += int(usage.get("total_tokens") or 0)
        if d.get("latency_ms") is not None:
            row["lat"].append(float(d["latency_ms"]))
    table = Table(title=f"batch {batch}")
    for col in ("provider/model", "jobs", "failed", "tokens", "p50 ms", "p95 ms"):
        table.add_column(col, justify="left" if col == "provider/model" else "right")
    for key, row in sorted(rows.items()):
        lat = sorted(row["lat"])
        p50 = f"{lat[len(lat) // 2]:.0f}" if lat else "-"
        p95 = f"{quantiles(lat, n=20)[-1]:.0f}" if len(lat) >= 2 else p50
        table.add_row(key, str(row["jobs"]), str(row["failed"]), f"{row['tokens']:,}", p50, p95)
    return table
