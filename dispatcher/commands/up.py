"""``dispatch up``: the whole topology on one machine, without Docker.

Embedded Redis when ``REDIS_URL`` is unset, a router worker, one worker per enabled
provider (every provider with ``--simulate``, against the in-process simulator), beat and
Flower — each a subprocess with its own log — supervised until Ctrl-C (or SIGTERM), then
stopped together. The same processes a production deployment runs, so what works here
works under docker compose.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.table import Table

from dispatcher.cli_support import EXIT_INFRA, fail, load_or_exit
from dispatcher.config import config_dir
from dispatcher.settings import env


def mask_url(url: str) -> str:
    """``redis://:secret@host:6379/0`` -> ``redis://:***@host:6379/0``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _flower_argv(port: int) -> list[str] | None:
    """``dispatch flower`` arguments, or None when that command is not installed."""
    if importlib.util.find_spec("dispatcher.commands.flower") is None:
        return None
    from dispatcher.cli import app as cli_app

    for cmd in cli_app.registered_commands:
        name = cmd.name or (cmd.callback.__name__ if cmd.callback else "")
        if name == "flower" and cmd.callback is not None:
            params = inspect.signature(cmd.callback).parameters
            return ["flower", "--port", str(port)] if "port" in params else ["flower"]
    return None


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        simulate: bool = typer.Option(False, "--simulate",
                                      help="Every provider is the local simulator."),
        flower: bool = typer.Option(True, "--flower/--no-flower", help="Start Flower."),
        flower_port: int = typer.Option(5555, "--flower-port", metavar="PORT"),
        beat: bool = typer.Option(True, "--beat/--no-beat", help="Start beat (schedules)."),
        loglevel: str = typer.Option("info", "--loglevel", "-l", metavar="LEVEL"),
        config: str = typer.Option(None, "--config", metavar="DIR", show_default=False,
                                   help="Configuration directory."),
        api_port: int = typer.Option(8000, "--api-port", metavar="PORT",
                                     help="Port of the HTTP API (dispatch serve); 0: none."),
    ) -> None:
        """Run Redis (if needed), routers, provider workers, beat, Flower and the HTTP API
        until Ctrl-C."""
        cfg = load_or_exit(config, simulate=simulate)
        providers = [p for p in cfg.providers if cfg.enabled(p)]
        if not providers:
            disabled = "; ".join(f"{p}: {cfg.status(p).reason}" for p in cfg.providers)
            fail(f"no provider is enabled ({disabled}); set a key or use --simulate")
        raise typer.Exit(_up(cfg, providers, simulate, flower, flower_port, beat, loglevel,
                             api_port))


def _up(cfg, providers: list[str], simulate: bool, flower: bool, flower_port: int,
        beat: bool, loglevel: str, api_port: int = 0) -> int:
    from dispatcher.local import LocalStack, sigterm_as_interrupt

    out = Console(stderr=True)
    state_dir = env().dispatch_state_dir
    cdir = config_dir(cfg.directory).resolve()
    stack = LocalStack(state_dir, cdir, simulate)
    os.environ["DISPATCH_CONFIG"] = str(cdir)  # this process's runtime reads the same config
    with sigterm_as_interrupt():
        return _up_stack(out, stack, cfg, cdir, providers, simulate, flower, flower_port,
                         beat, loglevel, state_dir, api_port)


def _up_stack(out: Console, stack, cfg, cdir: Path, providers: list[str], simulate: bool,
              flower: bool, flower_port: int, beat: bool, loglevel: str,
              state_dir: Path, api_port: int = 0) -> int:
    from redis import RedisError

    from workers.quota.engine import LimitsMismatch

    try:
        url = stack.start_redis()
        from workers.runtime import get_runtime

        rt = get_runtime()
        rt.live_quota.ensure_limits()
        rt.sim_quota.ensure_limits()
        sim_url = stack.start_simulator(cfg) if simulate else None
        common = ["--config", str(cdir), "--loglevel", loglevel]
        stack.start_worker("router", ["worker", *common])
        for p in providers:
            stack.start_worker(f"worker-{p}", ["worker", "--provider", p, *common])
        if beat:
            stack.start_worker("beat", ["beat", *common, *(["--simulate"] if simulate else [])])
        flower_note = "off (--no-flower)"
        if flower:
            argv = _flower_argv(flower_port)
            if argv is None:
                flower_note = "not started: this install has no `dispatch flower` command"
            else:
                os.environ.setdefault("FLOWER_PORT", str(flower_port))
                stack.start_worker("flower", argv)
                auth = " (basic auth)" if os.environ.get("FLOWER_BASIC_AUTH") else ""
                flower_note = f"http://127.0.0.1:{flower_port}{auth}"
        if api_port:  # the OpenAI-compatible API, loopback only (docs/gateway.md)
            stack.start_worker("gateway", ["serve", "--port", str(api_port), *common,
                                           *(["--simulate"] if simulate else [])])
            out.print(f"HTTP API   http://127.0.0.1:{api_port}/v1", highlight=False)
        _print_topology(out, stack, url, sim_url, flower_note, state_dir, simulate)
        return _supervise(out, stack)
    except KeyboardInterrupt:
        return 0
    except LimitsMismatch as exc:
        out.print(f"[bold red]error:[/] {exc}")
        return 2
    except RedisError as exc:
        out.print(f"[bold red]Redis failed:[/] {exc}")
        return EXIT_INFRA
    finally:
        n = len(stack.procs)
        what = " and the embedded Redis" if stack.embedded is not None else ""
        out.print(f"stopping {n} processes{what} ...")
        stack.stop()
        out.print("stopped.")


def _print_topology(out: Console, stack, url: str, sim_url: str | None, flower_note: str,
                    state_dir: Path, simulate: bool) -> None:
    where = "embedded, data in " + str((state_dir / "redis").resolve()) if stack.embedded \
        else "REDIS_URL"
    out.print(f"Redis      {mask_url(url)}  ({where})", highlight=False, soft_wrap=True)
    if stack.embedded:
        out.print("           every dispatch command run in this directory uses it; elsewhere:",
                  highlight=False)
        out.print(f"           export REDIS_URL={url}", highlight=False, soft_wrap=True)
    if sim_url:
        out.print(f"[yellow]SIMULATED[/]  every provider is the local simulator at {sim_url}",
                  highlight=False, soft_wrap=True)
    out.print(f"Flower     {flower_note}", highlight=False)
    table = Table(title=None, box=None)
    for col in ("process", "pid", "log"):
        table.add_column(col)
    for name, proc, log in stack.procs:
        table.add_row(name, str(proc.pid), str(log))
    out.print(table)
    out.print("running; Ctrl-C stops everything" + (" (simulated)" if simulate else ""))


def _supervise(out: Console, stack) -> int:
    """Report each process that dies (with its log's tail); end when none is left."""
    reported: set[str] = set()
    while True:
        time.sleep(1.0)
        for name, code, tail in stack.dead_workers():
            if name in reported:
                continue
            reported.add(name)
            out.print(f"[bold red]{name} exited with code {code}[/]; last lines of its log:",
                      highlight=False)
            out.print(tail, markup=False, highlight=False)
        if len(reported) == len(stack.procs):
            out.print("[bold red]every process has stopped[/]")
            return EXIT_INFRA
