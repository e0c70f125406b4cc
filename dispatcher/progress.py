"""Following a batch: one live line on a terminal, plain periodic lines otherwise.

Done/total and the ETA come first (a narrow terminal cuts the tail, never them); the ETA
follows the recent rate (:class:`RecentRate`), the pure rule :func:`eta_seconds`.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable
from contextlib import nullcontext
from statistics import quantiles

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dispatcher.waiting import StallWatch

POLL_S = 0.25
PLAIN_EVERY_S = 5.0
WINDOW_S = 30.0
"""The ETA follows the rate of the last this-many seconds, not the run's average: a batch
that started with a burst (idle targets) and now waits on a per-minute limit must not
promise the burst's pace."""


class RecentRate:
    """Jobs ended per second over the last ``window_s`` (pure: the caller gives the time)."""

    def __init__(self, window_s: float = WINDOW_S):
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, t: float, done: int) -> None:
        self.samples.append((t, done))
        while len(self.samples) > 2 and t - self.samples[1][0] >= self.window_s:
            self.samples.popleft()

    def rate(self) -> float | None:
        """None until there is a second's worth of samples to measure over."""
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        if t1 - t0 < 1.0:
            return None
        return max(0, d1 - d0) / (t1 - t0)


def eta_seconds(remaining: int, rate: float | None) -> float | None:
    """Seconds left at the recent rate; 0 when nothing remains, None when unknown (no
    rate yet, or nothing ended within the window: waiting on a quota reset)."""
    if remaining <= 0:
        return 0.0
    if not rate:
        return None
    return remaining / rate


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "eta ?"
    s = int(round(seconds))
    if s < 60:
        return f"eta {s}s"
    if s < 3600:
        return f"eta {s // 60}m{s % 60:02d}s"
    return f"eta {s // 3600}h{s % 3600 // 60:02d}m"


def progress_line(done: int, total: int, failed: int, rate: float | None, eta: float | None,
                  providers: str, width: int | None = None) -> str:
    """``"120/200 done  eta 40s  2.0/s  3 failed  groq=80 mistral=40"``: what matters first,
    so a narrow terminal cuts the provider counts, never the count or the ETA."""
    parts = [f"{done}/{total} done", format_eta(eta),
             f"{rate:.1f}/s" if rate is not None else "-/s", f"{failed} failed"]
    line = "  ".join(parts + ([providers] if providers else []))
    if width is not None and len(line) > width:
        line = line[:max(width - 1, 0)] + "…"
    return line


def _providers(info: dict) -> str:
    return " ".join(f"{p}={n}" for p, n in sorted(info.get("providers", {}).items()))


def follow_batch(rt, batch: str, console: Console,
                 dead_workers: Callable[[], list] = lambda: []) -> bool:
    """Block until every job of ``batch`` ended. False if the local workers died first.

    On a terminal one live line (redrawn in place); otherwise a plain line every
    ``PLAIN_EVERY_S`` and at the end."""
    info = rt.store.batch(batch) or {}
    total = info.get("total", 0)
    recent = RecentRate()
    stall = StallWatch(rt, batch)  # says why, once no job moved for a minute
    live = Live(console=console, auto_refresh=False, transient=False) \
        if console.is_terminal else None
    last_print = 0.0
    with live or nullcontext():
        while True:
            info = rt.store.batch(batch) or {}
            done = info.get("completed", 0) + info.get("failed", 0)
            now = time.monotonic()
            recent.add(now, done)
            rate = recent.rate()
            eta = eta_seconds(total - done, rate)
            if live is not None:
                line = progress_line(done, total, info.get("failed", 0), rate, eta,
                                     _providers(info), width=console.width - 1)
                live.update(Text(line), refresh=True)
            elif done >= total or now - last_print >= PLAIN_EVERY_S:
                console.print("progress: " + progress_line(
                    done, total, info.get("failed", 0), rate, eta, _providers(info)),
                    highlight=False, soft_wrap=True)
                last_print = now
            if note := stall.check(done):
                console.print(note, highlight=False)
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
        if col == "provider/model":  # folded, never cut: a model id must stay whole
            table.add_column(col, overflow="fold")
        else:
            table.add_column(col, justify="right", no_wrap=True)
    for key, row in sorted(rows.items()):
        lat = sorted(row["lat"])
        p50 = f"{lat[len(lat) // 2]:.0f}" if lat else "-"
        p95 = f"{quantiles(lat, n=20)[-1]:.0f}" if len(lat) >= 2 else p50
        table.add_row(key, str(row["jobs"]), str(row["failed"]), f"{row['tokens']:,}", p50, p95)
    return table
