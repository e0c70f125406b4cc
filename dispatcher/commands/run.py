"""``dispatch run IN.jsonl -o OUT.jsonl``: the main job, start to finish, on one machine."""

from __future__ import annotations

import math
import os
from pathlib import Path

import typer
from rich.console import Console

from dispatcher.cli_support import (
    EXIT_INFRA,
    EXIT_INVALID,
    check_output_or_exit,
    fail,
    load_or_exit,
    read_batch_or_exit,
)
from dispatcher.config import config_dir
from dispatcher.progress import follow_batch, summary_table
from dispatcher.settings import env

EXIT_STRICT = 3
EXIT_INTERRUPTED = 130


def parse_duration(text: str, option: str = "--deadline") -> float:
    """``24h``, ``90m``, ``45s``, ``2d`` or plain seconds (finite, not negative)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        value = float(number) * unit
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        fail(f"{option} {text!r}: expected e.g. 24h, 90m, 45s")
    return value


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        input_path: Path = typer.Argument(None, metavar="IN.jsonl", show_default=False,
                                          help="OpenAI batch file."),
        output: Path = typer.Option(..., "--output", "-o", metavar="OUT.jsonl",
                                    help="Results (JSONL)."),
        simulate: bool = typer.Option(
            None, "--simulate/--no-simulate", show_default=False,
            help="Send all traffic to the local provider simulator. With --resume the "
                 "batch decides; a contradicting flag is refused."),
        workers: str = typer.Option("local", "--workers", metavar="local|external",
                                    help="'local' (start workers) or 'external' (a cluster)."),
        deadline: str = typer.Option("24h", "--deadline", metavar="DURATION",
                                     help="Give up on jobs after this (e.g. 90m, 24h)."),
        strict: bool = typer.Option(False, "--strict", help="Exit 3 if any job failed."),
        resume: str = typer.Option(None, "--resume", metavar="BATCH", show_default=False,
                                   help="Continue an interrupted batch."),
        config: str = typer.Option(None, "--config", metavar="DIR", show_default=False,
                                   help="Configuration directory."),
        priority: str = typer.Option("normal", "--priority", metavar="high|normal|low",
                                     help="Share of the targets against other batches."),
    ) -> None:
        """Run a batch to the end and write one result line per input line."""
        if workers not in ("local", "external"):
            fail("--workers must be 'local' or 'external'")
        if input_path is None and not resume:
            fail("give IN.jsonl (or --resume BATCH)")
        if input_path is not None and resume:
            fail("give IN.jsonl or --resume BATCH, not both")
        check_output_or_exit(output)
        check_priority(priority)
        cfg = load_or_exit(config, simulate=bool(simulate))
        deadline_s = parse_duration(deadline)
        specs = read_batch_or_exit(input_path, cfg) if input_path is not None else []
        if workers == "external" and not os.environ.get("REDIS_URL"):
            from dispatcher.embedded import running_server

            if running_server(env().dispatch_state_dir / "redis") is None:
                fail("--workers external needs a running cluster: REDIS_URL (the cluster's "
                     "Redis), or `dispatch up` in this directory")
        from dispatcher.local import sigterm_as_interrupt

        with sigterm_as_interrupt():
            code = _run(cfg, specs, output, simulate, workers, deadline_s, strict, resume,
                        input_path, priority)
        raise typer.Exit(code)


def _resume_checks(rt, batch: str, flag: bool | None, config: str | None):
    """The resumed batch exists, the flag agrees with it, the configuration serves it:
    returns (simulated, config as the batch needs it). Exits 2 otherwise."""
    from dispatcher.resume import pending_target_lists, simulated_conflict, unserved

    info = rt.store.batch(batch)
    if info is None:
        fail(f"no batch {batch!r} here (see `dispatch status`); nothing was sent")
    simulated = info.get("simulated") == "1"
    conflict = simulated_conflict(batch, simulated, flag)
    if conflict:
        fail(conflict)
    cfg = load_or_exit(config, simulate=simulated)
    lost = unserved(pending_target_lists(rt, batch), cfg)
    if lost:
        fail(f"batch {batch} has unfinished jobs that no usable target of this "
             f"configuration can serve (their targets: {'; '.join(lost)}); nothing was sent")
    return simulated, cfg


def check_priority(priority: str) -> str:
    """``--priority`` of run and submit: exit 2 naming the allowed values."""
    from workers.priority import PRIORITIES

    if priority not in PRIORITIES:
        fail(f"--priority {priority!r}: expected one of {', '.join(PRIORITIES)}")
    return priority


def _run(cfg, specs, output: Path, flag: bool | None, workers: str, deadline_s: float,
         strict: bool, resume: str | None, input_path: Path | None,
         priority: str = "normal") -> int:
    from redis import RedisError

    from dispatcher.batches import submit, write_batch_results
    from dispatcher.local import LocalStack
    from workers.quota.engine import LimitsMismatch

    out = Console(stderr=True)
    state_dir = env().dispatch_state_dir
    simulate = bool(flag)
    if resume and not os.environ.get("REDIS_URL") and not (state_dir / "redis").is_dir():
        fail(f"no batch {resume!r}: there is no local state ({state_dir}/) here and "
             "REDIS_URL is unset; nothing was sent")
    stack = LocalStack(state_dir, config_dir(cfg.directory), simulate)
    batch = resume
    try:
        stack.start_redis()
        from workers.runtime import get_runtime

        rt = get_runtime()
        if resume:
            simulate, cfg = _resume_checks(rt, resume, flag, str(cfg.directory))
            stack.simulate = simulate
        rt.quota(simulate).ensure_limits()
        if simulate:
            url = stack.start_simulator(cfg)
            out.print(f"[yellow]SIMULATED[/]: every provider is the local simulator at {url} "
                      "(the catalog's real limits, no keys, no network)", soft_wrap=True)
        if workers == "local":
            stack.start_worker("worker-all", ["worker", "--all", "--loglevel", "warning",
                                              "--config", str(cfg.directory)])
        if batch is None:
            from dispatcher.forecast_state import submit_line

            if line := submit_line(cfg, specs, simulate, priority, deadline_s):
                out.print(line, highlight=False)
            batch = submit(specs, simulated=simulate, deadline_s=deadline_s,
                           name=str(input_path or ""), priority=priority)
            out.print(f"batch [bold]{batch}[/]: {len(specs)} jobs queued")
        else:
            out.print(f"batch [bold]{batch}[/]: resumed" + (" (simulated)" if simulate else ""))
        finished = follow_batch(rt, batch, out, stack.dead_workers)
        if not finished:
            out.print("[bold red]the local workers stopped[/]; see the log under "
                      f"{state_dir / 'logs'}")
            return EXIT_INFRA
        try:
            got = write_batch_results(batch, output)
        except OSError as exc:  # checked before the start; it changed while the batch ran
            out.print(f"[bold red]cannot write {output}:[/] {exc.strerror or exc}; the "
                      f"results are kept: dispatch results {batch} -o OTHER.jsonl",
                      highlight=False)
            return EXIT_INFRA
        if not got.complete:  # never write a pending job as ended; say what is missing
            out.print(f"[bold red]incomplete results[/]: {got.pending} jobs not ended and "
                      f"{got.missing} job records missing; wrote the {got.written} ended "
                      f"lines to {output}. Collect the rest with: dispatch results {batch} "
                      f"-o {output} --wait")
            return EXIT_INFRA
        info = rt.store.batch(batch) or {}
        out.print(summary_table(rt, batch))
        out.print(f"wrote {got.written} result lines to {output} "
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
            out.print(f"resume with:  dispatch run --resume {batch} -o {output}")
        return EXIT_INTERRUPTED
    except LimitsMismatch as exc:
        out.print(f"[bold red]error:[/] {exc}")
        return EXIT_INVALID
    except RedisError as exc:
        out.print(f"[bold red]Redis failed:[/] {exc}")
        return EXIT_INFRA
    finally:
        stack.stop()
