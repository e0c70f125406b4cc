"""``dispatch worker``: a Celery worker on tag queues (routers) and/or provider queues."""

from __future__ import annotations

import gc
import os
import socket

import typer

from dispatcher.cli_support import fail, load_or_exit, require_redis


def worker_argv(cfg, providers: list[str], routers: bool, concurrency: int | None,
                loglevel: str, name: str | None) -> list[str]:
    """The ``celery worker`` arguments for a role: thread pool, one queue per tag/provider."""
    from workers.celery_app import provider_queue, tag_queue

    queues: list[str] = []
    threads = 0
    if routers:
        queues += [tag_queue(t) for t in sorted(cfg.routes)]
        threads += 2
    for p in providers:
        queues.append(provider_queue(p))
        threads += cfg.providers[p].concurrency
    role = "all" if routers and providers else ("router" if routers else "+".join(providers))
    hostname = name or f"{role}-{os.getpid()}@{socket.gethostname()}"
    return [
        "worker", "-Q", ",".join(queues), "-P", "threads",
        "-c", str(concurrency or max(1, threads)), "-n", hostname, "-l", loglevel,
        "--without-gossip", "--without-mingle",
    ]


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        provider: list[str] = typer.Option([], "--provider", "-p", metavar="NAME",
                                           help="Call this provider (repeatable)."),
        all_: bool = typer.Option(False, "--all", help="Routers and every provider in one."),
        concurrency: int = typer.Option(None, "--concurrency", "-c", metavar="N",
                                        help="Threads (default: from config)."),
        loglevel: str = typer.Option("info", "--loglevel", "-l", metavar="LEVEL"),
        name: str = typer.Option(None, "--name", "-n", metavar="NODE@HOST",
                                 help="Worker name."),
        config: str = typer.Option(None, "--config", metavar="DIR", show_default=False,
                                   help="Configuration directory."),
    ) -> None:
        """A Celery worker. No options: the routing side; --provider NAME: the callers."""
        cfg = load_or_exit(config)
        require_redis()
        unknown = [p for p in provider if p not in cfg.providers]
        if unknown:
            fail(f"unknown provider(s): {', '.join(unknown)} "
                 f"(configured: {', '.join(cfg.providers)})")
        providers = list(cfg.providers) if all_ else provider
        routers = all_ or not provider
        from workers.quota.engine import LimitsMismatch
        from workers.runtime import get_runtime

        try:
            rt = get_runtime()
            rt.live_quota.ensure_limits()
            rt.sim_quota.ensure_limits()
        except LimitsMismatch as exc:
            fail(str(exc))
        from workers.celery_app import app as celery_app

        # Long garbage-collector pauses would delay a request between taking its quota and
        # reaching the upstream: keep start-up objects out of every collection, collect less.
        gc.freeze()
        gc.set_threshold(20_000, 20, 100)
        celery_app.worker_main(worker_argv(cfg, providers, routers, concurrency, loglevel, name))
