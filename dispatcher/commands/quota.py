"""``dispatch quota``: every limit with its use, what remains and when it resets.

    dispatch quota                    # live counters (namespace from DISPATCH_NAMESPACE)
    dispatch quota --simulated        # the simulator's separate counters
    dispatch quota --watch            # refresh every second
    dispatch quota --adopt-limits     # make the configured limits the ones in force
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import redis
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from dispatcher.config import Config, ConfigError, load_config
from dispatcher.connect import RedisNotConfigured, redis_client
from workers.quota.engine import LimitState, QuotaEngine, QuotaUnavailable
from workers.quota.limits import fingerprint_key


def humanize(seconds: float) -> str:
    """``75`` -> ``"1m 15s"``; ``93784`` -> ``"1d 2h"``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _num(x: float) -> str:
    """``1234`` -> ``"1,234"``; neurons may be fractional: ``2.5`` -> ``"2.5"``."""
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.3f}".rstrip("0").rstrip(".")


def _resets(state: LimitState, now: float) -> str:
    if state.resets_at is None:
        return "-"
    at = datetime.fromtimestamp(state.resets_at).astimezone()
    fmt = "%H:%M:%S" if state.resets_at - now < 86400 else "%Y-%m-%d %H:%M"
    return f"{at.strftime(fmt)} (in {humanize(state.resets_at - now)})"


def build_view(engine: QuotaEngine) -> Group:
    """The table of every limit, then any cooldown in force and the limits' fingerprint."""
    states = engine.snapshot()
    now = time.time()
    mode = "simulated" if engine.simulated else "live"
    table = Table(title=f"Quota ({mode}, namespace {escape(engine.namespace)})")
    table.add_column("provider", style="bold")
    table.add_column("model", overflow="fold")
    table.add_column("limit", no_wrap=True)
    table.add_column("used", justify="right", no_wrap=True)
    table.add_column("remaining", justify="right", no_wrap=True)
    table.add_column("resets", no_wrap=True)
    reserves = any(s.reserved for s in states)
    if reserves:
        table.add_column("reserve", no_wrap=True)  # kept for interactive requests
    last = None
    for s in states:
        if last is not None and s.provider != last:
            table.add_section()
        share = s.used / s.limit
        style = "red" if s.remaining == 0 else "yellow" if share >= 0.8 else ""
        table.add_row(
            escape(s.provider) if s.provider != last else "",
            escape(s.model) if s.model else "[dim](all models)[/dim]",
            f"{s.limit:,} {s.unit.value}/{s.per.value}",
            Text(_num(s.used), style=style),
            Text(_num(s.remaining), style=style),
            _resets(s, now),
            *((f"{_num(s.reserved)} interactive" if s.reserved else "",) if reserves else ()),
        )
        last = s.provider
    lines: list[Text | Table] = [table]
    for target in engine.config.targets():
        secs, reason = engine.cooldown_of(target)
        if secs > 0:
            lines.append(Text(f"{target}: paused {humanize(secs)} ({reason})", style="yellow"))
    in_force = engine.redis.get(fingerprint_key(engine.namespace))
    if isinstance(in_force, bytes):
        in_force = in_force.decode()
    mine = engine.config.limits_fingerprint()
    if in_force and in_force != mine:
        lines.append(Text(
            f"limits in force ({in_force}) differ from this configuration ({mine}): "
            "workers with this configuration refuse to start; stop every worker and run "
            "`dispatch quota --adopt-limits` to adopt it", style="red"))
    return Group(*lines)


def quota(
    config: Annotated[
        Path | None,
        typer.Option("--config", metavar="DIR",
                     help="Configuration directory (else $DISPATCH_CONFIG, else ./config)."),
    ] = None,
    simulated: Annotated[
        bool, typer.Option("--simulated", help="Show the simulator's separate counters.")
    ] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every second.")] = False,
    adopt_limits: Annotated[
        bool,
        typer.Option("--adopt-limits",
                     help="Make the configured limits the ones in force (stop every worker "
                          "first)."),
    ] = False,
) -> None:
    """Every limit: used, remaining, and when it resets."""
    console = Console()
    try:
        cfg: Config = load_config(config, simulate=simulated)
    except ConfigError as exc:
        for problem in exc.problems:
            console.print(f"[red]{escape(problem)}[/red]")
        raise typer.Exit(2) from None
    try:
        client = redis_client()
    except RedisNotConfigured as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    namespace = os.environ.get("DISPATCH_NAMESPACE") or "dispatch"
    engine = QuotaEngine(client, cfg, namespace=namespace, simulated=simulated)
    try:
        if adopt_limits:
            old = client.get(fingerprint_key(namespace))
            new = engine.adopt_limits()
            was = old.decode() if isinstance(old, bytes) else old
            console.print(f"limits in force: {new} (was {was or 'unset'})")
            return
        if not watch:
            console.print(build_view(engine))
            return
        with Live(build_view(engine), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(1)
                live.update(build_view(engine), refresh=True)
    except (QuotaUnavailable, redis.RedisError) as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def register(app: typer.Typer) -> None:
    app.command("quota")(quota)
