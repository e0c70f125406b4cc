"""``dispatch providers``: every provider and model, its limits, and whether it is enabled."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dispatcher.commands.config_cmd import ConfigOption, SimulateOption, is_paid, load_or_exit
from dispatcher.config import Config, Limit, Per, Target, Unit
from dispatcher.output import JsonOption, Rows, emit, stdout_is_terminal
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
            usable, reason = target_state(cfg, target)
            if usable:
                state = "[green]enabled[/green]"
            elif status.enabled:
                state = f"[yellow]skipped: {escape(reason or '')}[/yellow]"
            else:
                state = f"[red]disabled: {escape(reason or '')}[/red]"
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


def target_state(cfg: Config, target: Target) -> tuple[bool, str | None]:
    """(usable, why not): a disabled provider's reason, or paid use being off."""
    status = cfg.status(target.provider)
    if not status.enabled:
        return False, status.reason
    if is_paid(cfg, target.key) and not cfg.settings.allow_paid:
        return False, "paid (allow_paid is off)"
    return True, None


def providers_json(cfg: Config) -> list[dict]:
    """The contract's ``providers --json``: one object per model."""
    out = []
    for target in cfg.targets():
        enabled, reason = target_state(cfg, target)
        m = target.model
        out.append({
            "provider": target.provider, "model": m.id, "enabled": enabled, "reason": reason,
            "context_window": m.context_window, "max_output_tokens": m.max_output_tokens,
            "vision": m.vision, "reasoning": m.reasoning,
            "limits": [{"unit": lim.unit.value, "limit": lim.limit, "per": lim.per.value,
                        "scope": scope} for scope, lim in target.limits()],
        })
    return out


PROVIDERS_HEADER = ["provider", "model", "enabled", "reason", "context_window",
                    "max_output_tokens", "vision", "reasoning", "limits"]


def providers_rows(docs: list[dict]) -> Rows:
    """Plain rows; ``limits`` as ``scope:limit unit/per`` joined by ``; ``."""
    rows = [[d[k] for k in PROVIDERS_HEADER[:-1]]
            + ["; ".join(f"{lim['scope']}:{lim['limit']} {lim['unit']}/{lim['per']}"
                         for lim in d["limits"])] for d in docs]
    return Rows(PROVIDERS_HEADER, rows)


def check_json(rows: list[CheckRow], simulate: bool) -> list[dict]:
    return [{"target": r.target, "result": r.status,
             "latency_ms": None if r.latency_ms is None else round(r.latency_ms, 1),
             "detail": r.detail, "simulated": simulate} for r in rows]


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
    as_json: JsonOption = False,
) -> None:
    """Each provider and model: context, output cap, flags, limits, enabled or why not."""
    cfg = load_or_exit(config, simulate=simulate)
    if check:
        catalog_check(cfg, simulate, as_json)
        return
    if not test:
        docs = providers_json(cfg)
        emit(providers_rows(docs), docs, as_json, rich=lambda: build_table(cfg))
        print_closed(cfg, simulate)
        return
    rows = _run_checks(cfg, simulate)
    docs = check_json(rows, simulate)
    emit(Rows(["target", "result", "latency_ms", "detail", "simulated"],
              [list(d.values()) for d in docs]), docs, as_json,
         rich=lambda: check_table(rows, simulate))
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

    from rich.console import Console

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
    elif stdout_is_terminal():
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
            stack.start_simulator(cfg, register=False)  # this command's own, not the cluster's
        return check_all(rt, cfg, simulate)
    finally:
        stack.stop()


def register(app: typer.Typer) -> None:
    """Add ``dispatch providers`` to the CLI."""
    app.command("providers")(providers)
