"""``dispatch providers``: every provider and model, its limits, and whether it is enabled."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dispatcher.commands.config_cmd import ConfigOption, SimulateOption, is_paid, load_or_exit
from dispatcher.config import Config, Limit, Per, Unit
from dispatcher.provider_check import CheckRow, check_all, check_table

_UNIT = {Unit.requests: "req", Unit.tokens: "tok", Unit.neurons: "neurons"}
_PER = {Per.second: "s", Per.minute: "min", Per.hour: "h", Per.day: "day", Per.month: "month"}


def format_limit(limit: Limit) -> str:
    """``{requests, 14400, day}`` -> ``"14,400 req/day"``."""
    return f"{limit.limit:,} {_UNIT[limit.unit]}/{_PER[limit.per]}"


def format_limits(limits: list[Limit]) -> str:
    """Limits joined with a middle dot, or ``"-"`` when there are none."""
    return " · ".join(format_limit(lim) for lim in limits) or "-"


def build_table(cfg: Config) -> Table:
    """One row per model; a provider's shared limits are spelled out on its first row."""
    table = Table(title="Providers and models", show_lines=False)
    table.add_column("provider", style="bold")
    table.add_column("model", overflow="fold")
    table.add_column("context", justify="right")
    table.add_column("max out", justify="right")
    table.add_column("flags")
    table.add_column("limits")
    table.add_column("status", overflow="fold")
    for name, pc in cfg.providers.items():
        status = cfg.status(name)
        for i, model in enumerate(pc.models):
            target = cfg.target(f"{name}/{model.id}")
            paid = is_paid(cfg, target.key)
            flags = {"vision": model.vision, "reasoning": model.reasoning, "paid": paid}
            limits = [format_limits(model.limits)] if model.limits else []
            if pc.limits and i == 0:
                limits.append(f"all {name} models: {format_limits(pc.limits)}")
            elif pc.limits and not limits:
                limits.append(f"{name}'s shared limits")
            if not status.enabled:
                state = f"[red]disabled: {escape(status.reason or '')}[/red]"
            elif paid and not cfg.settings.allow_paid:
                state = "[yellow]skipped: paid (allow_paid is off)[/yellow]"
            else:
                state = "[green]enabled[/green]"
            table.add_row(
                escape(name) if i == 0 else "",
                escape(model.id),
                f"{model.context_window:,}",
                f"{model.max_output_tokens:,}",
                ", ".join(flag for flag, on in flags.items() if on),
                escape("\n".join(limits) or "-"),
                state,
            )
        table.add_section()
    return table


def providers(
    config: ConfigOption = None,
    simulate: SimulateOption = False,
    test: Annotated[
        bool,
        typer.Option(
            "--test", help="Send a tiny request to each enabled model, under quota."
        ),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Compare the configured models with what each enabled provider lists today "
                 "(exit 4: a routed target is gone; 1: a list could not be fetched).",
        ),
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="With --check: one JSON document on stdout.")
    ] = False,
) -> None:
    """Each provider and model: context, output cap, flags, limits, enabled or why not."""
    cfg = load_or_exit(config, simulate=simulate)
    if check:
        catalog_check(cfg, simulate, json_out)
        return
    if not test:
        Console().print(build_table(cfg))
        print_closed(cfg, simulate)
        return
    rows = _run_checks(cfg, simulate)
    Console().print(check_table(rows, simulate))
    if not rows:
        typer.echo("no enabled provider: set a key variable, or add --simulate", err=True)
        raise typer.Exit(2)
    if any(row.status != "ok" for row in rows):
        raise typer.Exit(1)


def print_closed(cfg: Config, simulate: bool) -> None:
    """Models the workers' catalog check closed, under the listing (stderr: data stays clean)."""
    from dispatcher.provider_check import closed_models

    for key in closed_models(cfg, simulate):
        typer.echo(f"closed: {key} (not listed upstream; reopens when listed again)", err=True)


def catalog_check(cfg: Config, simulate: bool, json_out: bool) -> None:
    """``--check``: routed targets no longer listed first and loudly (stderr); the report
    as JSON, a table on a terminal, else tab-separated rows; exit per the report."""
    import json
    import sys

    from dispatcher.provider_check import catalog_table, catalog_tsv, check_catalog

    report = check_catalog(cfg, simulate)
    for target in report.to_json()["gone_routed"]:
        typer.secho(f"ROUTED TARGET GONE: {target} is no longer listed upstream; "
                    "routes.yaml still sends jobs to it", fg="red", bold=True, err=True)
    if not report.providers:
        typer.echo("no enabled provider to check: set a key variable, or add --simulate",
                   err=True)
        raise typer.Exit(2)
    if json_out:
        sys.stdout.write(json.dumps(report.to_json()) + "\n")
    elif sys.stdout.isatty():
        Console().print(catalog_table(report))
    else:
        sys.stdout.write(catalog_tsv(report))
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _run_checks(cfg: Config, simulate: bool) -> list[CheckRow]:
    from dispatcher.local import LocalStack
    from dispatcher.settings import env

    stack = LocalStack(env().dispatch_state_dir, cfg.directory, simulate)
    try:
        stack.start_redis()
        from workers.runtime import get_runtime

        rt = get_runtime()
        rt.quota(simulate).ensure_limits()
        if simulate:
            stack.start_simulator(cfg)
        return check_all(rt, cfg, simulate)
    finally:
        stack.stop()


def register(app: typer.Typer) -> None:
    """Add ``dispatch providers`` to the CLI."""
    app.command("providers")(providers)
