"""``dispatch run IN.jsonl -o OUT.jsonl``: the main job, start to finish, on one machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from rich.console import Console

from dispatcher.cli_support import (
    EXIT_INFRA,
    EXIT_INVALID,
    fail,
    load_or_exit,
    read_batch_or_exit,
)
from dispatcher.config import config_dir
from dispatcher.progress import follow_batch, summary_table
from dispatcher.settings import env

EXIT_STRICT = 3
EXIT_INTERRUPTED = 130


def parse_duration(text: str) -> float:
    """``24h``, ``90m``, ``45s``, ``2d`` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        fail(f"--deadline {text!r}: expected e.g. 24h, 90m, 45s")


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        input_path: Path = typer.Argument(None, metavar="IN.jsonl", help="OpenAI batch file."),
        output: Path = typer.Option(..., "--output", "-o", help="Results (JSONL)."),
        simulate: bool = typer.Option(False, "--simulate",
                                      help="Send all traffic to the local provider simulator."),
        workers: str = typer.Option("local", "--workers",
                                    help="'local' (start workers) or 'external' (a cluster)."),
        deadline: str = typer.Option("24h", "--deadline", help="Give up on jobs after this."),
        strict: bool = typer.Option(False, "--strict", help="Exit 3 if any job failed."),
        resume: str = typer.Option(None, "--resume", help="Continue an interrupted batch."),
        config: str = typer.Option(None, "--config", help="Configuration directory."),
        priority: str = typer.Option("normal", "--priority", help="high, normal or low."),
    ) -> None:
        """Run a batch to the end and write one result line per input line."""
        if workers not in ("local", "external"):
            fail("--workers must be 'local' or 'external'")
        if input_path is None and not resume:
            fail("give IN.jsonl (or --resume BATCH)")
        check_priority(priority)
        cfg = load_or_exit(config, simulate=simulate)
        deadline_s = parse_duration(deadline)
        specs = read_batch_or_exit(input_path, cfg) if input_path is not None else []
        if workers == "external" and not os.environ.get("REDIS_URL"):
            fail("--workers external needs REDIS_URL (the cluster's Redis)")
        code = _run(cfg, specs, output, simulate, workers, deadline_s, strict, resume,
                    input_path, priority)
        raise typer.Exit(code)


def check_priority(priority: str) -> str:
    """``--priority`` of run and submit: exit 2 naming the allowed values."""
    from workers.priority import PRIORITIES

    if priority not in PRIORITIES:
        fail(f"--priority {priority!r}: expected one of {', '.join(PRIORITIES)}")
    return priority


def _run(cfg, specs, output: Path, simulate: bool, workers: str, deadline_s: float,
         strict: bool, resume: str | None, input_path: Path | None,
         priority: str = "normal") -> int:
    from redis import RedisError

    from dispatcher.batches import submit, write_batch_results
    from dispatcher.local import LocalStack
    from workers.quota.engine import LimitsMismatch

    out = Console(stderr=True)
    state_dir = env().dispatch_state_dir
    stack = LocalStack(state_dir, config_dir(cfg.directory), simulate)
    batch = resume
    try:
        stack.start_redis()
        from workers.runtime import get_runtime

        rt = get_runtime()
        rt.quota(simulate).ensure_limits()
        if simulate:
            url = stack.start_simulator(cfg)
            out.print(f"[yellow]SIMULATED[/]: every provider is the local simulator at {url} "
                      "(the catalog's real limits, no keys, no network)")
        if workers == "local":
            stack.start_worker("worker-all", ["worker", "--all", "--loglevel", "warning",
                                              "--config", str(cfg.directory)])
        if batch is None:
            from dispatcher.forecast_state import submit_line

            if line := submit_line(cfg, specs, simulate, priority, deadline_s):
                out.print(line, highlight=False)
            batch = submit(specs, simulated=simulate, deadline_s=deadline_s,
                           name=str(input_path or ""), priority=priority)
        out.print(f"batch [bold]{batch}[/]: {len(specs) or '?'} jobs queued")
        finished = follow_batch(rt, batch, out, stack.dead_workers)
        if not finished:
            out.print("[bold red]the local workers stopped[/]; see the log under "
                      f"{state_dir / 'logs'}")
            return EXIT_INFRA
        n = write_batch_results(batch, output)
        info = rt.store.batch(batch) or {}
        out.print(summary_table(rt, batch))
        out.print(f"wrote {n} result lines to {output} "
                  f"({info.get('completed', 0)} completed, {info.get('failed', 0)} failed)"
                  + (" [yellow](simulated)[/]" if simulate else ""))
        if strict and info.get("failed"):
            return EXIT_STRICT
        return 0
    except KeyboardInterrupt:
        where = "" if os.environ.get("REDIS_URL") and stack.embedded is None else \
            f" (kept in {state_dir})"
        out.print(f"\n[yellow]interrupted[/]: batch {batch or '(not submitted)'} keeps its "
                  f"unfinished jobs{where}.")
        if batch:
            sim = " --simulate" if simulate else ""
            out.print(f"resume with:  dispatch run --resume {batch} -o {output}{sim}")
        return 130
    except LimitsMismatch as exc:
        out.print(f"[bold red]error:[/] {exc}")
        return EXIT_INVALID
    except RedisError as exc:
        out.print(f"[bold red]Redis failed:[/] {exc}")
        return EXIT_INFRA
    finally:
        stack.stop()
        time.sleep(0)
