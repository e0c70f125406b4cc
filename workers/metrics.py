"""Prometheus metrics of a worker process, and the per-day usage behind ``dispatch report``.

Counters are per process (Prometheus sums them across workers). Quota figures are not
counters: a :class:`QuotaCollector` reads :meth:`QuotaEngine.snapshot` from Redis at scrape
time, so a scrape shows exactly what ``dispatch quota`` shows, whichever worker answers.

A worker serves ``/metrics`` when ``DISPATCH_METRICS_PORT`` is set (bound to
``DISPATCH_METRICS_ADDR``, default 127.0.0.1): the ``worker_ready`` handler below starts
the server; it is connected when this module is imported, which every worker does through
``workers.tasks`` -> ``workers.caller``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

from celery.signals import worker_ready
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from workers.quota.costs import NEURON_SCALE
from workers.usage import record_usage, tokens_of

log = logging.getLogger("dispatch.metrics")

PROVIDER_WIDE = "*"
"""``model`` label of a provider-wide limit (one shared by every model of the provider)."""

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)

CALLS = Counter("dispatch_upstream_calls", "Upstream calls that ended, by outcome class.",
                ["provider", "model", "outcome"])
RATE_LIMITED = Counter("dispatch_upstream_429", "Upstream rate-limit refusals (429).",
                       ["provider"])
LATENCY = Histogram("dispatch_upstream_latency_seconds", "Upstream call latency.",
                    ["provider", "model"], buckets=LATENCY_BUCKETS)
TOKENS = Counter("dispatch_tokens", "Tokens the upstream reported, by kind.",
                 ["provider", "model", "kind"])
NEURONS = Counter("dispatch_neurons", "Neurons the upstream usage costs (models with "
                  "neuron rates).", ["provider", "model"])
REFUSALS = Counter("dispatch_reservations_refused", "Quota reservations refused, by limit.",
                   ["provider", "limit"])

def split_target(target: str) -> tuple[str, str]:
    provider, _, model = target.partition("/")
    return provider, model


def limit_label(limit: str | None) -> str:
    """Keep the label's cardinality bounded: a cooldown's free-text reason (an upstream's
    message) is dropped, ``"groq/m: cooldown (slow down)"`` -> ``"groq/m: cooldown"``."""
    if not limit:
        return "unknown"
    head, sep, _ = limit.partition(": cooldown (")
    return f"{head}: cooldown" if sep else limit


def _neurons_milli(target: str, prompt: int, completion: int) -> int:
    from workers.quota.costs import neurons_milli
    from workers.runtime import get_runtime

    try:
        return neurons_milli(get_runtime().config.target(target).model, prompt, completion)
    except Exception:  # noqa: BLE001 - a metric must never fail a call
        return 0


def record_call(target: str, outcome: str, latency_s: float | None, usage: Any,
                simulated: bool | None = None) -> None:
    """One upstream call ended: ``outcome`` is the Outcome class name (Success, RateLimited...).

    With ``simulated`` given, the call's usage is also added to the day's totals in Redis
    for ``dispatch report`` (simulated traffic apart)."""
    provider, model = split_target(target)
    CALLS.labels(provider, model, outcome).inc()
    if outcome == "RateLimited":
        RATE_LIMITED.labels(provider).inc()
    if latency_s is not None:
        LATENCY.labels(provider, model).observe(latency_s)
    prompt, completion = tokens_of(usage)
    if prompt:
        TOKENS.labels(provider, model, "prompt").inc(prompt)
    if completion:
        TOKENS.labels(provider, model, "completion").inc(completion)
    if prompt or completion:
        milli = _neurons_milli(target, prompt, completion)
        if milli:
            NEURONS.labels(provider, model).inc(milli / NEURON_SCALE)
    if simulated is not None:
        try:
            from workers.runtime import get_runtime

            record_usage(get_runtime(), target, usage, simulated, ok=outcome == "Success")
        except Exception as exc:  # noqa: BLE001 - never fail a job for its report line
            log.warning("usage of %s not recorded: %s", target, exc)


def record_refusal(target: str, limit: str | None) -> None:
    """A reservation was refused by ``limit``."""
    REFUSALS.labels(split_target(target)[0], limit_label(limit)).inc()


class QuotaCollector(Collector):
    """Quota gauges read from Redis at scrape time (live and simulated namespaces).

    ``runtime`` is a callable returning the :class:`~workers.runtime.Runtime`, so the
    collector can be registered before the runtime exists."""

    def __init__(self, runtime: Any = None) -> None:
        if runtime is None:
            from workers.runtime import get_runtime

            runtime = get_runtime
        self._runtime = runtime

    def describe(self) -> Iterator[Any]:
        return iter(())  # figures are only known at scrape time

    def collect(self) -> Iterator[Any]:
        labels = ["mode", "provider", "model", "unit", "per"]
        used = GaugeMetricFamily("dispatch_quota_used", "Units charged in the current "
                                 "window or period (as `dispatch quota`).", labels=labels)
        remaining = GaugeMetricFamily("dispatch_quota_remaining", "Units left in the "
                                      "current window or period.", labels=labels)
        limit = GaugeMetricFamily("dispatch_quota_limit", "The configured limit.",
                                  labels=labels)
        resets = GaugeMetricFamily("dispatch_quota_resets_at_seconds", "Epoch when the "
                                   "oldest charge leaves the window / the period ends.",
                                   labels=labels)
        reserved = GaugeMetricFamily("dispatch_quota_reserved", "Units of a calendar limit "
                                     "kept for interactive requests (batch jobs stop short).",
                                     labels=labels)
        up = GaugeMetricFamily("dispatch_quota_up", "1 if the quota store answered this "
                               "scrape.", labels=["mode"])
        rt = None
        for mode, simulated in (("live", False), ("sim", True)):
            try:
                rt = rt or self._runtime()
                states = rt.quota(simulated).snapshot()
            except Exception as exc:  # noqa: BLE001 - a scrape must always answer
                log.warning("quota snapshot (%s) failed: %s", mode, exc)
                up.add_metric([mode], 0)
                continue
            up.add_metric([mode], 1)
            for s in states:
                lv = [mode, s.provider, s.model or PROVIDER_WIDE, s.unit.value, s.per.value]
                used.add_metric(lv, s.used)
                remaining.add_metric(lv, s.remaining)
                limit.add_metric(lv, s.limit)
                if s.resets_at is not None:
                    resets.add_metric(lv, s.resets_at)
                if s.reserved:
                    reserved.add_metric(lv, s.reserved)
        yield from (used, remaining, limit, resets, reserved, up)


_server_lock = threading.Lock()
_server_port: int | None = None


def start_metrics_server(port: int, addr: str = "127.0.0.1",
                         registry: CollectorRegistry = REGISTRY) -> int | None:
    """Serve ``/metrics`` on ``addr:port`` with the quota collector; once per process.

    A port already taken (two workers on one host given the same port) is logged, not
    fatal: metrics are not worth a worker. Returns the port served, or None."""
    global _server_port
    with _server_lock:
        if _server_port is not None:
            return _server_port
        try:
            start_http_server(port, addr=addr, registry=registry)
        except OSError as exc:
            log.warning("metrics server not started on %s:%s: %s", addr, port, exc)
            return None
        registry.register(QuotaCollector())
        _server_port = port
        log.info("Prometheus metrics on http://%s:%s/metrics", addr, port)
        return port


@worker_ready.connect(weak=False)
def _start_in_worker(**_: Any) -> None:
    port = os.environ.get("DISPATCH_METRICS_PORT", "").strip()
    if not port:
        return
    if not port.isdigit():
        log.warning("DISPATCH_METRICS_PORT=%r is not a port number: no metrics", port)
        return
    start_metrics_server(int(port), os.environ.get("DISPATCH_METRICS_ADDR", "127.0.0.1"))
