"""One upstream attempt, shared by call tasks and ``dispatch providers --test``.

:func:`prepare` does everything that may be slow (building the request, the pooled
client) *before* quota is taken; :func:`send` is what happens after: the request, then
reconcile the reservation with the reported usage, feed rate-limit headers back to the
quota engine, and count it in the metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dispatcher.config import Target, Unit
from workers import metrics
from workers.providers.adapters import Adapter, adapter_for
from workers.providers.client import ProviderClient, call_stream
from workers.providers.client import call as call_upstream
from workers.providers.outcomes import RateLimited, Success
from workers.quota.costs import Cost, estimate_cost, max_tokens_sent, usage_cost


@dataclass(frozen=True)
class Prepared:
    """A request ready to go: nothing left to build between the reservation and the send."""

    target: Target
    adapter: Adapter
    client: ProviderClient
    body: dict[str, Any]
    cost: Cost
    base_url: str | None
    api_key: str | None
    simulated: bool
    metered: bool
    """Some limit counts tokens or neurons: the reservation needs reconciling."""


def prepare(rt, target: Target, job_body: dict[str, Any], simulated: bool) -> Prepared:
    cfg = rt.config
    adapter = adapter_for(target.provider_config.dialect)
    model = target.model
    body = adapter.prepare(job_body, model.id, max_tokens_sent(job_body, model, cfg.settings.jobs))
    return Prepared(
        target=target,
        adapter=adapter,
        client=rt.clients.get(target.provider),
        body=body,
        cost=estimate_cost(job_body, model, cfg.settings.quota, cfg.settings.jobs),
        base_url=rt.base_url(target.provider, simulated),
        api_key="simulated" if simulated else cfg.api_key(target.provider),
        simulated=simulated,
        metered=any(lim.unit is not Unit.requests for _, lim in target.limits()),
    )


#: A request written later than this after its grant has its window entries moved.
LATE_SEND_S = 0.005


def send(rt, p: Prepared, reservation_id: str | None,
         granted_at: float | None = None, defer_success_usage: bool = False,
         on_chunk: Callable[[dict[str, Any]], None] | None = None) -> tuple[Any, float]:
    """Call upstream under a granted reservation; returns ``(outcome, latency_s)``.

    ``granted_at`` (``time.monotonic()`` taken before asking for the reservation): if the
    request only reached the wire noticeably later — a stalled thread, a slow connect —
    the reservation's sliding-log entries move to the moment it left, so the quota's view
    stays in step with the upstream's. ``defer_success_usage``: a successful call's usage
    is not written here; the caller writes it with the job's result (one round trip less).
    ``on_chunk``: stream the answer (``p.body`` asks for it), each chunk to this callback;
    the reconcile below then uses the usage of the last chunk, or keeps the estimate.
    """
    quota = rt.quota(p.simulated)

    def on_sent() -> None:
        late = time.monotonic() - (granted_at or 0.0)
        if granted_at is not None and reservation_id and late > LATE_SEND_S:
            quota.shift(p.target, p.cost, reservation_id, late)

    if on_chunk is None:
        outcome, latency, observations = call_upstream(p.adapter, p.client, p.base_url or "",
                                                       p.api_key, p.body, on_sent)
    else:
        outcome, latency, observations = call_stream(p.adapter, p.client, p.base_url or "",
                                                     p.api_key, p.body, on_chunk, on_sent)
    if reservation_id is not None and p.metered:
        actual = usage_cost(outcome.usage, p.target.model) if isinstance(outcome, Success) \
            else Cost(1, 0, 0)  # no answer: the request counts, no tokens were used
        if actual is not None:
            quota.reconcile(reservation_id, actual)
    deferred = defer_success_usage and isinstance(outcome, Success)
    metrics.record_call(p.target.key, type(outcome).__name__, latency,
                        getattr(outcome, "usage", None),
                        simulated=None if deferred else p.simulated)
    for obs in observations:
        if _due(p.target.key, obs, isinstance(outcome, RateLimited)):
            quota.observe(p.target, obs.unit, obs.per, obs.remaining, obs.reset_s, obs.scope)
    return outcome, latency


_OBSERVE_EVERY_S = 1.0
_last_observed: dict[tuple[str, str, str, str], float] = {}


def _due(target: str, obs: Any, urgent: bool) -> bool:
    """Rate-limit headers come with every answer; applying them once a second per limit
    (and at once on a 429) keeps our view close without a Redis script per header."""
    key = (target, obs.scope, obs.unit, obs.per)
    now = time.monotonic()
    if urgent or now - _last_observed.get(key, 0.0) >= _OBSERVE_EVERY_S:
        _last_observed[key] = now
        return True
    return False
