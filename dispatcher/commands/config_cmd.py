"""``dispatch config check``: validate the configuration directory and summarise it.

Exit codes: 0 when the configuration is valid (disabled providers are not errors),
2 when it is refused; every problem names its file, key path and reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dispatcher import cli_support
from dispatcher.config import Config, config_dir

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="DIR",
        help="Configuration directory (default: $DISPATCH_CONFIG, else ./config).",
        show_default=False,
    ),
]
SimulateOption = Annotated[
    bool,
    typer.Option(
        "--simulate",
        help="Show the configuration as `dispatch run --simulate` sees it: every provider enabled.",
    ),
]


def load_or_exit(directory: Path | None, simulate: bool = False) -> Config:
    """Load the configuration, or print its problems on stderr and exit 2 (no traceback)."""
    return cli_support.load_or_exit(str(directory) if directory else None, simulate=simulate)


def is_paid(cfg: Config, ref: str) -> bool:
    """True when the target (or its whole provider) is marked ``paid``."""
    target = cfg.target(ref)
    return target.model.paid or target.provider_config.paid


def summary_lines(cfg: Config) -> list[str]:
    """The human summary printed after ``OK``: counts, tags, disabled and paid targets."""
    n_models = sum(len(pc.models) for pc in cfg.providers.values())
    lines = [f"{len(cfg.providers)} providers, {n_models} models, {len(cfg.routes)} tags"]
    if cfg.simulate:
        lines.append("simulation: every provider is enabled (answers come from the simulator)")

    lines.append("tags:")
    width = max((len(t) for t in cfg.routes), default=0)
    for tag, refs in cfg.routes.items():
        usable = sum(cfg.usable(t) for t in cfg.route(tag))
        noun = "target" if len(refs) == 1 else "targets"
        note = "" if usable else "  <- no usable target"
        lines.append(f"  {tag:<{width}}  {len(refs)} {noun}, {usable} usable{note}")

    disabled = [(name, cfg.status(name).reason) for name in cfg.providers]
    disabled = [(name, reason) for name, reason in disabled if reason]
    if disabled:
        lines.append("disabled providers:")
        width = max(len(name) for name, _ in disabled)
        lines += [f"  {name:<{width}}  {reason}" for name, reason in disabled]
        lines.append("  (set the variables, or try everything locally with --simulate)")
    else:
        lines.append("disabled providers: none")

    paid = [t.key for t in cfg.targets() if is_paid(cfg, t.key)]
    if not paid:
        lines.append("paid models: none")
    elif cfg.settings.allow_paid:
        lines.append("paid models (used: allow_paid is on):")
        lines += [f"  {key}" for key in paid]
    else:
        lines.append("paid models (skipped: allow_paid is off):")
        lines += [f"  {key}" for key in paid]
    return lines


def check(config: ConfigOption = None, simulate: SimulateOption = False) -> None:
    """Validate the configuration and say what is wrong."""
    typer.echo(f"configuration: {config_dir(config).resolve()}")
    cfg = load_or_exit(config, simulate=simulate)
    typer.echo("OK")
    for line in summary_lines(cfg):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add the ``config`` command group to the CLI."""
    config_app = typer.Typer(
        name="config",
        help="Inspect the configuration directory.",
        no_args_is_help=True,
    )
    config_app.command("check")(check)
    app.add_typer(config_app, name="config")
