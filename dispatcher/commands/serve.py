"""``dispatch serve``: the OpenAI-compatible HTTP gateway (docs/gateway.md)."""

from __future__ import annotations

import os

import typer

from dispatcher.cli_support import EXIT_INFRA, EXIT_INVALID, fail, load_or_exit


def _simulator_alive(url: str | None) -> bool:
    if not url:
        return False
    import httpx

    try:
        return httpx.get(f"{url}/_sim/stats", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        port: int = typer.Option(8000, "--port", help="Port to listen on."),
        simulate: bool = typer.Option(False, "--simulate",
                                      help="Send every call to the local provider simulator."),
        config: str = typer.Option(None, "--config", help="Configuration directory."),
        log_level: str = typer.Option("warning", "--log-level", "--loglevel",
                                      help="uvicorn's log level."),
    ) -> None:
        """The OpenAI-compatible HTTP API: chat completions, models, files, batches."""
        from dispatcher.gateway.auth import check_bind, parse_tokens

        cfg = load_or_exit(config, simulate=simulate)
        tokens = parse_tokens(os.environ.get("DISPATCH_API_KEYS"))
        refusal = check_bind(host, tokens)
        if refusal:
            fail(refusal)
        raise typer.Exit(_serve(cfg, host, port, simulate, tokens, log_level.lower()))


def _serve(cfg, host: str, port: int, simulate: bool, tokens: list[str], log_level: str) -> int:
    import uvicorn
    from redis import RedisError
    from rich.console import Console

    from dispatcher.config import config_dir
    from dispatcher.gateway.app import build_app
    from dispatcher.gateway.state import Gateway
    from dispatcher.local import LocalStack
    from dispatcher.settings import env
    from workers.quota.engine import LimitsMismatch

    out = Console(stderr=True)
    stack = LocalStack(env().dispatch_state_dir, config_dir(cfg.directory), simulate)
    try:
        stack.start_redis()
        from workers.runtime import get_runtime

        rt = get_runtime()
        rt.quota(simulate).ensure_limits()
        if simulate:
            sim_url = rt.simulator_url()
            if not _simulator_alive(sim_url):
                sim_url = stack.start_simulator(cfg)
            os.environ["DISPATCH_SIMULATOR_URL"] = sim_url or ""  # at once, no cached lookup
            out.print(f"[yellow]SIMULATED[/]: every call goes to the simulator at {sim_url}",
                      highlight=False)
        auth = f"{len(tokens)} bearer token(s)" if tokens else "no tokens (loopback only)"
        out.print(f"gateway on http://{host}:{port}/v1  ({auth}); docs: /openapi.json",
                  highlight=False)
        app = build_app(Gateway(rt, simulate=simulate, tokens=tokens, cfg=cfg))
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                               access_log=False, timeout_graceful_shutdown=10,
                                               proxy_headers=False))
        server.run()
        from dispatcher.gateway.usage import BUFFER

        BUFFER.flush()  # the last report lines, while Redis is still there
        return 0 if server.started else EXIT_INFRA
    except (LimitsMismatch, RedisError) as exc:
        mismatch = isinstance(exc, LimitsMismatch)
        out.print(f"[bold red]{'error' if mismatch else 'Redis failed'}:[/] {exc}")
        return EXIT_INVALID if mismatch else EXIT_INFRA
    finally:
        stack.stop()
