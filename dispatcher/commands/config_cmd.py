"""``dispatch config check``: validate the configuration directory and summarise it.

Exit codes: 0 when the configuration is valid (disabled providers are not errors, and the
tags they leave with no usable target are named), 1 for that with ``--strict``, 2 when it
is refused; every problem names its file, key path and reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.text import Text

from dispatcher import cli_support
from dispatcher.config import Config, ConfigError, config_dir, load_config
from dispatcher.output import JsonOption, Rows, emit, stdout_is_terminal

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


def usable_tags(cfg: Config) -> dict[str, list[str]]:
    """tag -> its usable targets, in preference order (empty: nothing can serve the tag)."""
    return {tag: [t.key for t in cfg.route(tag) if cfg.usable(t)] for tag in cfg.routes}


def problem_json(problem: str) -> dict[str, str]:
    """``"providers.yaml: providers.groq.limits[0].per: bad"`` -> file, key path, message."""
    file, _, rest = problem.partition(": ")
    path, sep, message = rest.partition(": ")
    if not sep or " " in path:
        path, message = "", rest
    return {"file": file, "path": path, "message": message}


def warnings_of(cfg: Config, tags: dict[str, list[str]]) -> list[str]:
    out = [f"{name}: disabled ({cfg.status(name).reason})" for name in cfg.providers
           if cfg.status(name).reason]
    out += [f"tag {tag}: no usable target" for tag, usable in tags.items() if not usable]
    return out


def check(
    config: ConfigOption = None,
    simulate: SimulateOption = False,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Exit 1 when a tag has no usable target (keys unset).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Validate the configuration and say what is wrong.

    Exit 0 when it is valid, even with keys unset (they may come later: the tags with no
    usable target are named); 1 with --strict when a tag has no usable target; 2 when the
    configuration is invalid.
    """
    directory = config_dir(config).resolve()
    try:
        cfg = load_config(config, simulate=simulate)
    except ConfigError as exc:
        if as_json:
            typer.echo(json.dumps({"ok": False, "directory": str(directory),
                                   "errors": [problem_json(p) for p in exc.problems],
                                   "warnings": [], "tags": {}}, indent=2))
            raise typer.Exit(cli_support.EXIT_INVALID) from None
        typer.echo(f"configuration: {directory}", err=not stdout_is_terminal())
        load_or_exit(config, simulate=simulate)  # prints every problem, exits 2
        raise
    tags = usable_tags(cfg)
    unserved = [tag for tag, usable in tags.items() if not usable]
    doc = {"ok": True, "directory": str(directory), "errors": [],
           "warnings": warnings_of(cfg, tags), "tags": tags}
    rows = Rows(["tag", "targets", "usable_targets"],
                [[tag, ",".join(cfg.routes[tag]), ",".join(usable)]
                 for tag, usable in tags.items()])

    def human() -> Group:
        lines = [f"configuration: {directory}", "OK"]
        if unserved:
            lines.append(f"valid, but {len(unserved)} of {len(tags)} tags have no usable "
                         f"target: {', '.join(unserved)} (set their providers' keys, or use "
                         "--simulate; --strict exits 1 on this)")
        lines += summary_lines(cfg)
        return Group(*(Text(line) for line in lines))

    emit(rows, doc, as_json, rich=human,
         notes=[f"warning: {w}" for w in doc["warnings"]] if not stdout_is_terminal() else [])
    if strict and unserved:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``config`` command group to the CLI."""
    config_app = typer.Typer(
        name="config",
        help="Inspect the configuration directory.",
        no_args_is_help=True,
    )
    config_app.command("check")(check)
    app.add_typer(config_app, name="config")
