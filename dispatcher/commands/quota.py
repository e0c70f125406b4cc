"""``dispatch quota``: every limit with its use, what remains and when it resets.

    dispatch quota                    # live and simulated counters, each labelled
    dispatch quota --simulated        # only the simulator's separate counters
    dispatch quota --json             # [{provider, model, unit, per, limit, used, ...}]
    dispatch quota --watch            # refresh every second
    dispatch quota --adopt-limits     # make the configured limits the ones in force
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from dispatcher.cli_support import EXIT_INFRA, fail, load_or_exit, require_redis
from dispatcher.config import Limit
from dispatcher.connect import redis_client
from dispatcher.output import JsonOption, Rows, emit, stdout_is_terminal
from workers.quota.engine import LimitState, QuotaEngine, QuotaUnavailable
from workers.quota.limits import fingerprint_key, limit_text


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


def quota_table(engine: QuotaEngine, states: list[LimitState], now: float) -> Table:
    """The terminal table of one counter set, its title saying which (live or simulated)."""
    mode = "SIMULATED counters (the simulator's traffic)" if engine.simulated \
        else "live counters (real providers)"
    table = Table(title=f"Quota: {mode}, namespace {escape(engine.namespace)}")
    table.add_column("provider", style="bold", no_wrap=True)
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
            limit_text(Limit(unit=s.unit, limit=s.limit, per=s.per), sep=","),
            Text(_num(s.used), style=style),
            Text(_num(s.remaining), style=style),
            _resets(s, now),
            *((f"{_num(s.reserved)} interactive" if s.reserved else "",) if reserves else ()),
        )
        last = s.provider
    return table


def notes(engine: QuotaEngine) -> list[str]:
    """Cooldowns in force and a limits mismatch: what a person should know about the rows."""
    lines = []
    for target in engine.config.targets():
        secs, reason = engine.cooldown_of(target)
        if secs > 0:
            lines.append(f"{target}: paused {humanize(secs)} ({reason})")
    in_force = engine.redis.get(fingerprint_key(engine.namespace))
    if isinstance(in_force, bytes):
        in_force = in_force.decode()
    mine = engine.config.limits_fingerprint()
    if in_force and in_force != mine:
        lines.append(
            f"limits in force ({in_force}) differ from this configuration ({mine}): "
            "workers with this configuration refuse to start; stop every worker and run "
            "`dispatch quota --adopt-limits` to adopt it")
    return lines


def state_json(s: LimitState, simulated: bool) -> dict[str, Any]:
    return {"provider": s.provider, "model": s.model, "unit": s.unit.value,
            "per": s.per.value, "limit": s.limit, "used": s.used, "remaining": s.remaining,
            "resets_at": s.resets_at, "simulated": simulated,
            "reserved": s.reserved}
    # ``reserved``: units of the limit kept for interactive requests (batch jobs stop short).


QUOTA_HEADER = ["provider", "model", "unit", "per", "limit", "used", "remaining",
                "resets_at", "simulated", "reserved"]


def build_view(engines: list[QuotaEngine]) -> tuple[Rows, list[dict], Group, list[str]]:
    """Every counter of ``engines`` (live and/or simulated), as plain rows, JSON, the
    terminal view and notes. A counter set with nothing used is named, not tabled, when
    another set is shown too (an idle simulated set is noise next to live counters)."""
    now = time.time()
    docs: list[dict] = []
    parts: list[Table | Text] = []
    remarks: list[str] = []
    for engine in engines:
        states = engine.snapshot()
        docs += [state_json(s, engine.simulated) for s in states]
        idle = not any(s.used for s in states)
        if idle and len(engines) > 1 and engine.simulated:
            parts.append(Text("SIMULATED counters: nothing used "
                              "(`dispatch quota --simulated` lists them)", style="dim"))
        else:
            parts.append(quota_table(engine, states, now))
        remarks += [("simulated " if engine.simulated else "") + n for n in notes(engine)]
    rows = Rows(QUOTA_HEADER, [[d[k] for k in QUOTA_HEADER] for d in docs])
    return rows, docs, Group(*parts), remarks


def watch_view(engines: list[QuotaEngine]) -> Group:
    _, _, view, remarks = build_view(engines)
    return Group(view, *(Text(r, style="yellow") for r in remarks))


def quota(
    config: Annotated[
        Path | None,
        typer.Option("--config", metavar="DIR", show_default=False,
                     help="Configuration directory (else $DISPATCH_CONFIG, else ./config)."),
    ] = None,
    simulated: Annotated[
        bool | None, typer.Option(
            "--simulated/--live", show_default=False,
            help="Only the simulator's counters / only the real providers' (default: both, "
                 "each labelled).")
    ] = None,
    as_json: JsonOption = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every second.")] = False,
    adopt_limits: Annotated[
        bool,
        typer.Option("--adopt-limits",
                     help="Make the configured limits the ones in force (stop every worker "
                          "first)."),
    ] = False,
) -> None:
    """Every limit: used, remaining, and when it resets (real and simulated apart)."""
    console = Console()
    cfg = load_or_exit(str(config) if config else None, simulate=bool(simulated))
    require_redis()
    client = redis_client()
    namespace = os.environ.get("DISPATCH_NAMESPACE") or "dispatch"
    modes = [False, True] if simulated is None else [simulated]
    engines = [QuotaEngine(client, cfg, namespace=namespace, simulated=m) for m in modes]
    try:
        if adopt_limits:
            old = client.get(fingerprint_key(namespace))
            new = engines[0].adopt_limits()
            was = old.decode() if isinstance(old, bytes) else old
            console.print(f"limits in force: {new} (was {was or 'unset'})")
            return
        if not watch or as_json or not stdout_is_terminal():
            rows, docs, view, remarks = build_view(engines)
            emit(rows, docs, as_json, rich=lambda: view, notes=remarks)
            return
        with Live(watch_view(engines), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(1)
                live.update(watch_view(engines), refresh=True)
    except (QuotaUnavailable, redis.RedisError) as exc:
        fail(str(exc), EXIT_INFRA)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def register(app: typer.Typer) -> None:
    app.command("quota")(quota)
