"""``dispatch submit | status | results | cancel``: batches on a running cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dispatcher.cli_support import err, fail, load_or_exit, read_batch_or_exit, require_redis


def _when(ts: str | float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _runtime(config: str | None):
    load_or_exit(config)
    require_redis()
    from workers.runtime import get_runtime

    return get_runtime()


def register(app: typer.Typer) -> None:
    @app.command()
    def submit(
        input_path: Path = typer.Argument(..., metavar="IN.jsonl"),
        deadline: str = typer.Option("24h", "--deadline"),
        simulate: bool = typer.Option(False, "--simulate",
                                      help="Jobs go to the simulator the cluster knows."),
        config: str = typer.Option(None, "--config"),
        priority: str = typer.Option("normal", "--priority", help="high, normal or low."),
    ) -> None:
        """Enqueue a batch to a running cluster and print its id."""
        from dispatcher.commands.run import check_priority, parse_duration

        check_priority(priority)
        cfg = load_or_exit(config, simulate=simulate)
        require_redis()
        specs = read_batch_or_exit(input_path, cfg)
        from dispatcher.batches import submit as do_submit
        from dispatcher.forecast_state import submit_line

        deadline_s = parse_duration(deadline)
        if line := submit_line(cfg, specs, simulate, priority, deadline_s):
            err.print(line, highlight=False)
        print(do_submit(specs, simulated=simulate, deadline_s=deadline_s,
                        name=str(input_path), priority=priority))

    @app.command()
    def status(
        batch: str = typer.Argument(None, metavar="[BATCH]"),
        config: str = typer.Option(None, "--config"),
    ) -> None:
        """A batch's counts, or the most recent batches."""
        rt = _runtime(config)
        ids = [batch] if batch else rt.store.batches(20)
        from dispatcher.forecast_state import status_etas

        etas = {b: t for b, t in status_etas(rt).items() if b in ids}
        table = Table()
        for col in ("batch", "status", "total", "completed", "failed", "created", "by provider",
                    *(("eta",) if etas else ())):
            table.add_column(col)
        for b in ids:
            info = rt.store.batch(b)
            if info is None:
                fail(f"no batch {b!r}")
            table.add_row(b, info.get("status", "?"), str(info["total"]),
                          str(info["completed"]), str(info["failed"]), _when(info.get("created")),
                          " ".join(f"{p}={n}" for p, n in sorted(info["providers"].items())),
                          *((_when(etas.get(b)),) if etas else ()))
        Console().print(table)

    @app.command()
    def results(
        batch: str = typer.Argument(..., metavar="BATCH"),
        output: Path = typer.Option(..., "--output", "-o"),
        config: str = typer.Option(None, "--config"),
    ) -> None:
        """Write a batch's result lines (input order; unfinished jobs say so)."""
        rt = _runtime(config)
        info = rt.store.batch(batch)
        if info is None:
            fail(f"no batch {batch!r}")
        from dispatcher.batches import write_batch_results

        n = write_batch_results(batch, output)
        pending = info["total"] - info["completed"] - info["failed"]
        print(f"wrote {n} lines to {output}" + (f" ({pending} jobs not finished yet)"
                                                 if pending else ""))

    @app.command()
    def cancel(
        batch: str = typer.Argument(..., metavar="BATCH"),
        config: str = typer.Option(None, "--config"),
    ) -> None:
        """Stop a batch: waiting jobs end as cancelled; running calls finish."""
        rt = _runtime(config)
        if rt.store.batch(batch) is None:
            fail(f"no batch {batch!r}")
        from dispatcher.batches import cancel as do_cancel

        print(f"cancelled {do_cancel(batch)} waiting jobs of {batch}")
