"""``dispatch plan IN.jsonl``: when would this batch be done? Sends nothing upstream.

    dispatch plan examples/batch.jsonl --simulate
    dispatch plan big.jsonl --priority low --deadline 09:00 --json
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dispatcher.cli_support import (
    EXIT_INFRA,
    err,
    fail,
    load_or_exit,
    read_batch_or_exit,
    require_redis,
)
from dispatcher.forecast import as_json, clock, summary
from dispatcher.settings import env
from workers.priority import PRIORITIES


def parse_deadline(text: str, now: float) -> float:
    """``T`` as for ``run --deadline`` (``90m``, ``24h``, seconds) or an ISO time
    (``2026-12-01T09:00``, ``09:00`` today; local time unless it carries an offset)."""
    from dispatcher.commands.run import parse_duration

    raw = text.strip()
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        try:
            hm = datetime.strptime(raw, "%H:%M").time()
        except ValueError:
            return now + parse_duration(raw)
        at = datetime.combine(datetime.fromtimestamp(now).date(), hm)
    return at.timestamp()


def register(app: typer.Typer) -> None:
    @app.command()
    def plan(
        input_path: Path = typer.Argument(..., metavar="IN.jsonl", help="OpenAI batch file."),
        priority: str = typer.Option("normal", "--priority", help="high, normal or low."),
        deadline: str = typer.Option(None, "--deadline",
                                     help="Warn when the forecast misses it: 90m, 24h, or an "
                                          "ISO time (2026-12-01T09:00, 09:00)."),
        simulate: bool = typer.Option(False, "--simulate",
                                      help="Plan against the simulator's quota counters."),
        as_json_: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
        config: str = typer.Option(None, "--config", help="Configuration directory."),
    ) -> None:
        """Forecast when a batch would finish under the current quotas, reserves, resets
        and backlog. Reads the quota store; sends nothing upstream."""
        if priority not in PRIORITIES:
            fail(f"--priority {priority!r}: expected one of {', '.join(PRIORITIES)}")
        cfg = load_or_exit(config, simulate=simulate)
        specs = read_batch_or_exit(input_path, cfg)
        from redis import RedisError

        from dispatcher.forecast_state import plan as forecast
        from workers.quota.engine import QuotaUnavailable

        url = os.environ.get("REDIS_URL")
        if not url and (env().dispatch_state_dir / "redis").is_dir():
            url = require_redis()  # this directory's embedded Redis (dispatch up / run)
        note = None
        r = None
        if url:
            from dispatcher.connect import redis_client

            r = redis_client(url)
        else:
            note = ("no REDIS_URL and no local state here: assuming nothing used, nothing "
                    "queued and no cooldowns")
        ns = os.environ.get("DISPATCH_NAMESPACE") or "dispatch"
        try:
            f = forecast(cfg, specs, simulate, priority, r, ns)
        except (RedisError, QuotaUnavailable) as exc:
            fail(f"cannot read the quota store: {exc}", EXIT_INFRA)
        due = parse_deadline(deadline, f.now) if deadline else None
        missed = due is not None and not f.meets(due)
        if as_json_:
            doc = as_json(f, due)
            doc["simulated"] = simulate
            doc["priority"] = priority
            if note:
                doc["note"] = note
            print(json.dumps(doc))
        else:
            _show(f, due, simulate, note)
        if due is not None and not missed and not as_json_:
            print(f"meets the deadline ({clock(due, f.now)})")
        if missed:
            err.print(f"[bold yellow]warning:[/] the forecast misses the deadline "
                      f"({clock(due, f.now)}): {f.done_by(due):,} of {f.jobs:,} jobs by then",
                      highlight=False)


def _show(f, due: float | None, simulated: bool, note: str | None) -> None:
    out = Console()
    mode = " (simulated)" if simulated else ""
    out.print(f"[bold]{f.jobs:,} jobs[/]{mode}: {summary(f, due)}", highlight=False)
    if f.ahead:
        out.print(f"{f.ahead:,} queued jobs of other batches go first", highlight=False)
    table = Table(title=None)
    table.add_column("target")
    table.add_column("jobs", justify="right")
    for target, n in f.targets.items():
        table.add_row(target, f"{n:,}")
    out.print(table)
    if f.binding:
        out.print("held back by: " + "; ".join(
            f"{label} ({_secs(s)})" for label, s in f.binding[:3]), highlight=False)
    for r in f.resets:
        out.print(f"waits for {r.label} reset at {clock(r.at, f.now)}: "
                  f"{r.jobs:,} jobs after it", highlight=False)
    if note:
        out.print(f"[dim]{note}[/]", highlight=False)
    out.print(f"[dim]forecast made {time.strftime('%H:%M:%S', time.localtime(f.now))}; "
              "sends nothing upstream[/]", highlight=False)


def _secs(s: float) -> str:
    from dispatcher.commands.quota import humanize

    return humanize(s)
