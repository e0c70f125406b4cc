"""Shared CLI plumbing: clear errors and exit codes instead of tracebacks."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from dispatcher.config import Config, ConfigError, load_config
from dispatcher.settings import env

err = Console(stderr=True)

EXIT_INVALID = 2
EXIT_INFRA = 1


def fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_or_exit(directory: str | None, simulate: bool = False) -> Config:
    """Load the configuration or exit 2 with every problem; ``--config`` becomes the
    process's ``DISPATCH_CONFIG`` so its runtime and the workers it starts read the same."""
    if directory:
        os.environ["DISPATCH_CONFIG"] = str(directory)
    try:
        return load_config(directory, simulate=simulate)
    except ConfigError as exc:
        err.print("[bold red]invalid configuration:[/]", highlight=False)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID) from None


def require_redis() -> str:
    """``REDIS_URL``, else the embedded server of this directory's state (``.dispatch/``),
    started again if it is not running; exit 2 when there is neither."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    from dispatcher.embedded import EmbeddedUnavailable
    from dispatcher.local import attach_local_redis

    state = env().dispatch_state_dir
    if not (state / "redis").is_dir():
        fail(f"no cluster here: REDIS_URL is unset and there is no local state "
             f"({state}/) in this directory; start one with `dispatch up` or "
             "`dispatch run`, or set REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    try:
        server = attach_local_redis(state)
    except EmbeddedUnavailable as exc:
        fail(f"the embedded Redis of {state}/ did not start: {exc}", EXIT_INFRA)
    if server.started:
        err.print(f"note: no `dispatch up` or `dispatch run` is using {state}/ now; its "
                  "embedded Redis was started for this command only", highlight=False,
                  soft_wrap=True)
    return os.environ["REDIS_URL"]


def read_batch_or_exit(path: Path, cfg: Config) -> list:
    """Validate a whole batch file, or print every bad line and exit 2 (nothing is sent)."""
    from dispatcher.batchfile import BatchInvalid, format_problems, parse_batch

    if not path.exists():
        fail(f"{path}: no such file")
    try:
        return parse_batch(path, cfg)
    except BatchInvalid as exc:
        err.print(f"[bold red]{path}: invalid batch, nothing was sent[/]")
        print(format_problems(exc.problems), file=sys.stderr)
        missing = sorted({v for p in exc.problems for v in p.missing_env})
        if missing:
            print(f"Set {', '.join(missing)} to enable a provider, or add --simulate to run "
                  "against the local provider simulator.", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID) from None


def check_output_or_exit(path: Path) -> None:
    """Exit 2 unless ``path`` can be written: found out before anything is sent, not after
    the batch spent its quota."""
    from dispatcher.results import output_problem

    why = output_problem(path)
    if why:
        fail(f"cannot write the results to {path}: {why}; nothing was sent")


def plain_help() -> None:
    """Help texts a person can read: no Python types and no double brackets.

    This typer shows each parameter's Python type (``<bool>``, ``<str>``, ``<path>``) and
    wraps argument names in the usage line (``{IN.jsonl}``, ``[[BATCH]]``). Here flags show
    nothing, an option its metavar (else its name in capitals), an argument its name, and
    the usage line says ``IN.jsonl`` and ``[BATCH]``."""
    from typer import core

    def option_type(self, ctx) -> str | None:
        if self.metavar is not None:
            return self.metavar or None
        if self.is_flag or self.count:
            return None
        return (self.name or "value").upper()

    def argument_type(self, ctx) -> str | None:
        return None

    def usage_name(self) -> str:
        name = self.display_name_raw
        if not self.required and not name.startswith("["):
            name = f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    core.TyperOption.display_type_rich = option_type
    core.TyperArgument.display_type_rich = argument_type
    core.TyperArgument._usage_display_name = usage_name
