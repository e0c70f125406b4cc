"""Shared CLI plumbing: clear errors and exit codes instead of tracebacks."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from dispatcher.config import Config, ConfigError, load_config
from dispatcher.connect import RedisNotConfigured, redis_url

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
    try:
        return redis_url(required=True) or ""
    except RedisNotConfigured as exc:
        fail(str(exc))


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
