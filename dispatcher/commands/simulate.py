"""``dispatch simulate``: the provider simulator as a standalone server.

Point a dispatcher (or any OpenAI client) at ``{url}/{provider}/v1``; every configured
limit is enforced, and on Ctrl-C the per-target counts (over-limit included) are shown.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dispatcher.config import ConfigError, load_config


def parse_latency_ms(text: str) -> tuple[float, float]:
    """``"200-2000"`` -> ``(0.2, 2.0)`` seconds; ``"500"`` -> ``(0.5, 0.5)``."""
    low, sep, high = text.partition("-")
    try:
        lo, hi = float(low), float(high) if sep else float(low)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected MIN-MAX or a single number") from None
    if lo < 0 or hi < lo:
        raise typer.BadParameter(f"{text!r}: need 0 <= MIN <= MAX")
    return lo / 1000, hi / 1000


def stats_table(stats: dict[str, Any]) -> Table:
    table = Table(title="simulator: requests per target")
    for col in ("target", "received", "ok", "429", "over-limit", "injected", "tokens"):
        if col == "target":
            table.add_column(col, overflow="fold")
        else:
            table.add_column(col, justify="right")
    rows = [*stats["targets"].items(), ("total", stats["totals"])]
    for key, c in rows:
        over = str(c["over_limit"])
        table.add_row(key, str(c["received"]), str(c["ok"]), str(c["rate_limited"]),
                      f"[red]{over}[/red]" if c["over_limit"] else over,
                      str(c["errors_injected"]), str(c["tokens"]))
    return table


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate(
        config: Annotated[Path | None, typer.Option(
            "--config", metavar="DIR",
            help="Configuration directory (default: $DISPATCH_CONFIG, else ./config).",
            show_default=False)] = None,
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8199,
        latency_ms: Annotated[str, typer.Option(
            "--latency-ms", help="Answer delay, uniform in MIN-MAX milliseconds.")] = "200-2000",
        reply_tokens: Annotated[int, typer.Option(
            "--reply-tokens", min=1, help="Completion tokens per answer (capped by max_tokens).")
        ] = 32,
        drop_model: Annotated[list[str] | None, typer.Option(
            "--drop-model", metavar="PROVIDER/MODEL",
            help="Act as if this configured model were retired upstream: not listed by "
                 "GET /models, 404 when called (repeatable).")] = None,
    ) -> None:
        """The local provider simulator, for the configured providers (Ctrl-C to stop)."""
        from workers.simulator import Simulator

        try:
            cfg = load_config(config, simulate=True)
        except ConfigError as exc:
            for problem in exc.problems:
                typer.echo(problem, err=True)
            raise typer.Exit(2) from None
        sim = Simulator(cfg, host=host, port=port, latency=parse_latency_ms(latency_ms),
                        reply_tokens=reply_tokens)
        for ref in drop_model or []:
            provider, _, model = ref.partition("/")
            try:
                sim.drop_model(provider, model)
            except ValueError as exc:
                typer.echo(f"--drop-model {ref}: {exc}", err=True)
                raise typer.Exit(2) from None
        try:
            sim.start()
        except OSError as exc:
            typer.echo(f"cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
            raise typer.Exit(1) from None
        console = Console()
        console.print(f"simulator listening on [bold]{sim.url}[/bold]")
        for name in cfg.providers:
            console.print(f"  {name:<12} base_url {sim.base_url(name)}")
        for ref in sim.dropped():
            console.print(f"  dropped      {ref} (not listed, 404 when called)")
        console.print(f"admin: {sim.url}/_sim/stats  (Ctrl-C to stop)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            sim.stop()
        console.print(stats_table(sim.stats()))
