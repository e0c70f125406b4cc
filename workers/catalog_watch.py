"""Keep the catalog true while running: models no longer listed upstream are closed.

At worker start and every ``catalog.check_every_s`` (settings; 0 = off) one process per
deployment — whichever takes the Redis lock ``{ns}:catalog:lock:{live|sim}`` first —
publishes a ``dispatch.catalog_check`` task (so every check shows in Flower, with what it
closed and reopened). The task asks each enabled provider for its model list
(:mod:`workers.providers.listing`), compares it with the configuration
(:mod:`dispatcher.catalog_check`) and acts through the quota engine's own mechanism:

- a configured model no longer listed is closed with the reason ``"not listed upstream"``
  (a model cooldown, renewed at every check, so it lapses by itself if checks stop); the
  pump then routes its jobs to the next target without a call, and ``dispatch quota``,
  ``dispatch providers``, the metrics and Flower show why;
- a model closed for that reason and listed again is reopened at once;
- a provider whose list cannot be fetched changes nothing;
- OpenRouter's ``GET /api/v1/key`` (free requests of the UTC day) is read into the daily
  request counter with :meth:`QuotaEngine.observe` (it may only tighten).

Simulated traffic is checked against the simulator (when one is registered), on the
simulated quota counters, exactly like live traffic against the providers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import httpx
from celery import bootsteps
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dispatcher.catalog_check import NOT_LISTED, CheckReport
from dispatcher.config import Config, Per, Unit
from workers.celery_app import app
from workers.providers.listing import ListingError, check, fetch_key_quota

log = logging.getLogger("dispatch.catalog")

MIN_CLOSE_S = 600.0


def close_seconds(check_every_s: float) -> float:
    """How long one check closes an unlisted model: past the next two checks, so a late
    check never reopens it by lapse, yet it reopens by itself if checks stop for good."""
    return max(MIN_CLOSE_S, 2 * check_every_s + 60)


def apply(report: CheckReport, engine, cfg: Config) -> dict[str, list[str]]:
    """Close every configured model the report finds unlisted; reopen the listed ones that
    the check had closed. Providers not fetched are left alone."""
    seconds = close_seconds(cfg.settings.catalog.check_every_s)
    closed = []
    for key in report.gone_targets():
        engine.cooldown(cfg.target(key), seconds, "model", NOT_LISTED)
        closed.append(key)
    configured = {name: [m.id for m in pc.models] for name, pc in cfg.providers.items()}
    reopened = [key for key in report.listed_targets(configured)
                if engine.lift_cooldown(cfg.target(key), NOT_LISTED)]
    return {"closed": closed, "reopened": reopened}


def observe_openrouter(engine, cfg: Config, base_url: str | None, key: str | None) -> int | None:
    """Read OpenRouter's reported free requests left today into the daily request limit.

    Returns the remaining count applied, or None (no such provider, no answer, no field)."""
    name = next((n for n, pc in cfg.providers.items() if pc.dialect == "openrouter"), None)
    if name is None or not base_url:
        return None
    try:
        with httpx.Client() as client:
            quota = fetch_key_quota(client, base_url, key)
    except ListingError as exc:
        log.warning("openrouter key quota not read: %s", exc)
        return None
    if quota is None:
        return None
    target = cfg.target(f"{name}/{cfg.providers[name].models[0].id}")
    engine.observe(target, Unit.requests, Per.day, quota.remaining, scope="provider")
    return quota.remaining


def endpoints(rt, simulated: bool) -> dict[str, tuple[str | None, str | None]]:
    """{provider: (base_url, key)} of the providers to check in this mode."""
    cfg = rt.config
    if simulated:
        if not rt.simulator_url():
            return {}
        return {name: (rt.base_url(name, True), "simulated") for name in cfg.providers}
    return {name: (rt.base_url(name, False), cfg.api_key(name))
            for name in cfg.providers if cfg.status(name).enabled}


def run_once(rt, simulated: bool) -> dict[str, Any]:
    """One full check in one mode: compare, close/reopen, read OpenRouter's quota."""
    found = endpoints(rt, simulated)
    engine = rt.quota(simulated)
    report = check(rt.config, found, simulated)
    acted = apply(report, engine, rt.config)
    orouter = next((n for n, pc in rt.config.providers.items() if pc.dialect == "openrouter"),
                   None)
    remaining = None
    if orouter in found:
        remaining = observe_openrouter(engine, rt.config, *found[orouter])
    summary = {
        "mode": "sim" if simulated else "live",
        "exit_code": report.exit_code,
        **acted,
        "unfetched": {p.provider: p.error for p in report.providers if not p.fetched},
        "openrouter_free_remaining": remaining,
    }
    if acted["closed"] or summary["unfetched"]:
        log.warning("catalog check (%s): %s", summary["mode"], summary)
    else:
        log.info("catalog check (%s): %s", summary["mode"], summary)
    return summary


@app.task(name="dispatch.catalog_check", ignore_result=True)
def catalog_check(simulated: bool = False) -> dict[str, Any]:
    """Compare the catalog with the providers' lists; close what is gone (see module doc)."""
    from workers.runtime import get_runtime

    return run_once(get_runtime(), simulated)


def lock_key(namespace: str, simulated: bool, simulator: str | None = None) -> str:
    """One lock per mode; per simulator in simulate mode (a new simulator is checked at
    once, whatever the previous one's period)."""
    if not simulated:
        return f"{namespace}:catalog:lock:live"
    return f"{namespace}:catalog:lock:sim:{simulator or ''}"


def due(rt, simulated: bool) -> bool:
    """Take this period's check for the deployment (SET NX): True for one process only."""
    every = rt.config.settings.catalog.check_every_s
    ttl_ms = max(500, int(every * 1000) - 1000)
    key = lock_key(rt.namespace, simulated, rt.simulator_url() if simulated else None)
    return bool(rt.r.set(key, "1", nx=True, px=ttl_ms))


class CatalogWatch(bootsteps.StartStopStep):
    """A thread in every worker: at start and every ``catalog.check_every_s``, the first
    process to take the period's lock publishes the check to a queue this worker reads."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: str | None = None

    def start(self, worker) -> None:
        consumed = worker.app.amqp.queues.consume_from or {}
        names = sorted(q.name for q in consumed.values())
        if not names:
            return
        self._queue = names[0]
        self._thread = threading.Thread(target=self._run, name="dispatch-catalog", daemon=True)
        self._thread.start()

    def stop(self, worker) -> None:
        self._stop.set()

    def _run(self) -> None:
        from workers.runtime import get_runtime

        while not self._stop.is_set():
            every = 0.0
            try:
                rt = get_runtime()
                every = rt.config.settings.catalog.check_every_s
                if every <= 0:
                    return
                for simulated in (False, True):
                    if endpoints(rt, simulated) and due(rt, simulated):
                        mode = "sim" if simulated else "live"
                        catalog_check.apply_async(args=[simulated], queue=self._queue,
                                                  argsrepr=f"(mode={mode})")
            except Exception as exc:  # noqa: BLE001 - the watch must outlive a Redis blip
                log.warning("catalog watch: %s", exc)
            self._stop.wait(every if every > 0 else 60.0)


app.steps["worker"].add(CatalogWatch)


class UnlistedCollector(Collector):
    """``dispatch_catalog_unlisted{mode,provider,model}`` = 1 for each model the catalog
    check closed, read from Redis at scrape time (the same view as ``dispatch quota``)."""

    def describe(self):
        return iter(())

    def collect(self):
        gauge = GaugeMetricFamily("dispatch_catalog_unlisted", "1 for a configured model "
                                  "closed because its provider no longer lists it.",
                                  labels=["mode", "provider", "model"])
        try:
            from workers.runtime import get_runtime

            rt = get_runtime()
            for mode, simulated in (("live", False), ("sim", True)):
                engine = rt.quota(simulated)
                for target in rt.config.targets():
                    secs, reason = engine.cooldown_of(target)
                    if secs > 0 and reason == NOT_LISTED:
                        gauge.add_metric([mode, target.provider, target.model.id], 1)
        except Exception as exc:  # noqa: BLE001 - a scrape must always answer
            log.warning("catalog metric not read: %s", exc)
        yield gauge


with contextlib.suppress(ValueError):  # registered already (module reloaded)
    REGISTRY.register(UnlistedCollector())
