"""``dispatch submit | status | results | cancel``: batches on a running cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dispatcher import batch_object
from dispatcher.cli_support import err, fail, load_or_exit, read_batch_or_exit, require_redis
from dispatcher.output import JsonOption, Rows, cell, emit


def _when(ts: str | float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


STATUS_HEADER = ["batch", "status", "total", "completed", "failed", "pending", "simulated",
                 "created", "eta", "by_provider"]


def status_rows(objects: list[dict]) -> Rows:
    """One plain row per OpenAI batch object."""
    rows = []
    for o in objects:
        c = o["request_counts"]
        rows.append([o["id"], o["status"], c["total"], c["completed"], c["failed"],
                     c["total"] - c["completed"] - c["failed"], o["dispatch"]["simulated"],
                     _when(o["created_at"]), _when(o["dispatch"].get("eta")),
                     " ".join(f"{p}={n}" for p, n in o["dispatch"]["providers"].items())])
    return Rows(STATUS_HEADER, rows)


def status_table(objects: list[dict]) -> Table:
    table = Table()
    for col in STATUS_HEADER:
        table.add_column(col.replace("_", " "), no_wrap=col in ("batch", "status"),
                         justify="right" if col in ("total", "completed", "failed",
                                                    "pending") else "left")
    for row in status_rows(objects).rows:
        table.add_row(*(cell(v) for v in row))
    return table


def _runtime(config: str | None):
    load_or_exit(config)
    require_redis()
    from workers.runtime import get_runtime

    return get_runtime()


def register(app: typer.Typer) -> None:
    @app.command()
    def submit(
        input_path: Path = typer.Argument(..., metavar="IN.jsonl", show_default=False),
        deadline: str = typer.Option("24h", "--deadline", metavar="DURATION",
                                     help="Give up on jobs after this (e.g. 90m, 24h)."),
        simulate: bool = typer.Option(
            False, "--simulate",
            help="A simulated batch: its jobs go to the cluster's simulator "
                 "(`dispatch up --simulate`), never to real providers."),
        config: str = typer.Option(None, "--config", metavar="DIR", show_default=False,
                                   help="Configuration directory."),
        priority: str = typer.Option("normal", "--priority", metavar="high|normal|low",
                                     help="Share of the targets against other batches."),
    ) -> None:
        """Enqueue a batch to a running cluster and print its id."""
        from dispatcher.commands.run import check_priority, parse_duration

        check_priority(priority)
        cfg = load_or_exit(config, simulate=simulate)
        deadline_s = parse_duration(deadline)
        specs = read_batch_or_exit(input_path, cfg)
        require_redis()
        from workers.runtime import get_runtime

        if simulate and get_runtime().simulator_url() is None:
            fail("no simulator runs for this cluster: start `dispatch up --simulate` "
                 "(or submit without --simulate); nothing was sent")
        from dispatcher.batches import submit as do_submit
        from dispatcher.forecast_state import submit_line

        if line := submit_line(cfg, specs, simulate, priority, deadline_s):
            err.print(line, highlight=False)
        print(do_submit(specs, simulated=simulate, deadline_s=deadline_s,
                        name=str(input_path), priority=priority))

    @app.command()
    def status(
        batch: str = typer.Argument(None, metavar="BATCH", show_default=False,
                                    help="A batch id (default: the 20 most recent)."),
        as_json: JsonOption = False,
        config: str = typer.Option(None, "--config", metavar="DIR", show_default=False,
                                   help="Configuration directory."),
    ) -> None:
        """A batch's counts, or the most recent batches."""
        rt = _runtime(config)
        objects = []
        for b in [batch] if batch else rt.store.batches(20):
            # the same object `GET /v1/batches/BATCH` answers (dispatcher/batch_object.py)
            obj = batch_object.load(rt.store, rt.r, rt.namespace, b)
            if obj is None:
                if batch:
                    fail(f"no batch {b!r}")
                continue  # listed, but its retention ran out
            objects.append(obj)
        from dispatcher.forecast_state import status_etas

        etas = status_etas(rt)
        for o in objects:  # the forecast's end of an unfinished batch (None: ended/unknown)
            o["dispatch"]["eta"] = etas.get(o["id"])
        emit(status_rows(objects), objects[0] if batch else objects, as_json,
             rich=lambda: status_table(objects))

    @app.command()
    def results(
        batch: str = typer.Argument(..., metavar="BATCH"),
        output: Path = typer.Option(..., "--output", "-o"),
        wait: bool = typer.Option(False, "--wait", help="Block until every job has ended."),
        timeout: str = typer.Option(None, "--timeout", metavar="DURATION",
                                    help="With --wait: give up after this (e.g. 30m); "
                                         "the ended lines are written, exit 124."),
        config: str = typer.Option(None, "--config"),
    ) -> None:
        """Write the ENDED jobs' result lines (input order) and say how many are pending.

        A pending job gets no line (OpenAI's output files hold finished requests only),
        so a script collecting early never records a running job as failed.
        """
        from redis import RedisError

        from dispatcher.batches import EXIT_TIMEOUT, wait_for_end, write_batch_results
        from dispatcher.cli_support import EXIT_INFRA
        from dispatcher.commands.run import EXIT_INTERRUPTED, parse_duration
        from dispatcher.results import output_problem

        if problem := output_problem(output):  # before any waiting
            fail(problem)
        limit = parse_duration(timeout, "--timeout") if timeout is not None else None
        if limit is not None and not wait:
            fail("--timeout only applies with --wait")
        rt = _runtime(config)
        console = Console(stderr=True)
        try:
            if rt.store.batch(batch) is None:
                fail(f"no batch {batch!r}")
            ended = wait_for_end(rt, batch, console, limit) if wait else True
            got = write_batch_results(batch, output)
        except KeyboardInterrupt:
            console.print(f"\n[yellow]interrupted[/]: nothing written; batch {batch} goes on.")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except RedisError as exc:
            fail(f"Redis failed: {exc}", EXIT_INFRA)
        except OSError as exc:
            fail(f"{output}: cannot write: {exc.strerror or exc}", EXIT_INFRA)
        left = [f"{got.pending} jobs pending"] if got.pending else []
        if got.missing:
            left.append(f"{got.missing} job records missing (past jobs.retention_days?)")
        note = f" ({'; '.join(left)}; collect them later, or use --wait)" if left else ""
        console.print(f"wrote {got.written} ended lines to {output}{note}", highlight=False,
                      soft_wrap=True)
        if not ended:
            console.print(f"[yellow]timed out[/] after {timeout}: the batch has not ended")
            raise typer.Exit(EXIT_TIMEOUT)

    @app.command()
    def cancel(
        batch: str = typer.Argument(..., metavar="BATCH"),
        config: str = typer.Option(None, "--config", metavar="DIR", show_default=False,
                                   help="Configuration directory."),
    ) -> None:
        """Stop a batch: waiting jobs end as cancelled; running calls finish."""
        rt = _runtime(config)
        if rt.store.batch(batch) is None:
            fail(f"no batch {batch!r}")
        from dispatcher.batches import cancel as do_cancel

        print(f"cancelled {do_cancel(batch)} waiting jobs of {batch}")
