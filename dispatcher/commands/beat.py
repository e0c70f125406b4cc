"""``dispatch beat``: Celery beat for ``schedules.yaml`` (RedBeat: one active beat per Redis).

Start as many as you like for availability: one holds RedBeat's lock and sends the ticks,
the others wait and take over within ``DISPATCH_BEAT_LOCK_TIMEOUT`` seconds (default 30)
of the active one dying.
"""

from __future__ import annotations

import os

import typer

from dispatcher.cli_support import err, load_or_exit, require_redis


def register(app: typer.Typer) -> None:
    @app.command()
    def beat(
        simulate: bool = typer.Option(False, "--simulate",
                                      help="Scheduled jobs go to the simulator the cluster "
                                      "knows."),
        loglevel: str = typer.Option("info", "--loglevel", "-l"),
        config: str = typer.Option(None, "--config", help="Configuration directory."),
    ) -> None:
        """Celery beat: enqueue schedules.yaml entries on their cron ticks."""
        require_redis()
        cfg = load_or_exit(config, simulate=simulate)
        # The scheduler re-reads both when it starts (it also serves `celery beat`).
        os.environ["DISPATCH_CONFIG"] = str(cfg.directory)
        if simulate:
            os.environ["DISPATCH_BEAT_SIMULATE"] = "1"
        from workers.celery_app import app as celery_app
        from workers.schedules import EVERY_ENV, sync_schedules

        done = sync_schedules(cfg, celery_app, simulated=simulate)
        enabled = {n: s for n, s in cfg.schedules.items() if s.enabled}
        for name, s in sorted(enabled.items()):
            what = f"batch {s.batch}" if s.batch else f"{len(s.jobs or [])} inline jobs"
            err.print(f"schedule [bold]{name}[/]: '{s.cron}' ({s.timezone}) -> {what}",
                      highlight=False)
        if done["deleted"]:
            err.print(f"removed schedules no longer configured: {', '.join(done['deleted'])}")
        if not enabled:
            err.print("no enabled schedules in schedules.yaml; beat runs and waits for none")
        if os.environ.get(EVERY_ENV):
            err.print(f"[yellow]{EVERY_ENV}={os.environ[EVERY_ENV]}[/]: every schedule runs "
                      "at that interval instead of its cron (testing/diagnostics only)")
        conf = celery_app.redbeat_conf
        err.print(f"lock {conf.lock_key} ({conf.lock_timeout}s); a second beat waits as standby",
                  highlight=False)
        celery_app.Beat(loglevel=loglevel.upper(),
                        scheduler="workers.schedules:DispatchScheduler").run()
