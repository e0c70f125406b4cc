"""One upstream attempt, shared by call tasks and ``dispatch providers --test``.

:func:`prepare` does everything that may be slow (building the request, the pooled
client) *before* quota is taken; :func:`send` is what happens after: the request, then
reconcile the reservation with the reported usage, feed rate-limit headers back to the
quota engine, and count it in the metrics.
"""

from __future__ import annotations

import contextlib
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
from workers.quota.costs import Cost, max_tokens_sent, usage_cost
from workers.quota.engine import QuotaUnavailable
from workers.quota.textkinds import Features


@dataclass(frozen=True)
class Prepared:
    """A request ready to go: nothing left to build between the reservation and the send."""

    target: Target
    adapter: Adapter
    client: ProviderClient
    body: dict[str, Any]
    cost: Cost
    features: Features | None
    """What the prompt sends, by kind of text: the estimator learns from it after the call."""
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
    cost, features = rt.quota(simulated).learner.estimate(target, body)
    return Prepared(
        target=target,
        adapter=adapter,
        client=rt.clients.get(target.provider),
        body=body,
        cost=cost,
        features=features,
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
    sent: list[bool] = []

    def on_sent() -> None:
        sent.append(True)
        if granted_at is None or not reservation_id:
            return
        late = time.monotonic() - granted_at
        if late > LATE_SEND_S or quota.crosses_period(p.target, reservation_id, late):
            quota.shift(p.target, p.cost, reservation_id, late)

    if on_chunk is None:
        outcome, latency, observations = call_upstream(p.adapter, p.client, p.base_url or "",
                                                       p.api_key, p.body, on_sent)
    else:
        outcome, latency, observations = call_stream(p.adapter, p.client, p.base_url or "",
                                                     p.api_key, p.body, on_chunk, on_sent)
    left = bool(sent) or getattr(outcome, "status", None) is not None
    if reservation_id is not None:
        actual = charge(outcome, left, p.target, p.cost)
        if actual is not None and (p.metered or actual.requests == 0):
            quota.reconcile(reservation_id, actual)
    if isinstance(outcome, Success) and outcome.usage:
        learn(rt, p, outcome.usage)
    deferred = defer_success_usage and isinstance(outcome, Success)
    metrics.record_call(p.target.key, type(outcome).__name__, latency,
                        getattr(outcome, "usage", None),
                        simulated=None if deferred else p.simulated)
    for obs in observations:
        if _due(p.target.key, obs, isinstance(outcome, RateLimited)):
            quota.observe(p.target, obs.unit, obs.per, obs.remaining, obs.reset_s, obs.scope)
    return outcome, latency


def charge(outcome: Any, left: bool, target: Target, estimate: Cost) -> Cost | None:
    """What a sent (or unsent) request finally costs, for reconcile; None: keep the estimate.

    The upstream's word wins: reported ``usage`` replaces the estimate. Without it, a
    request that reached the wire keeps its estimate (the upstream may well have counted
    it: a timeout, a 5xx), a 429 keeps its tokens unless the provider says they do not
    count (``count_429_tokens: false``), and only a request that never left is given back
    in full. A pure rule: the table is tested without any I/O.
    """
    if not left:
        return Cost(0, 0, 0)
    reported = usage_cost(getattr(outcome, "usage", None), target.model)
    if reported is not None:
        return reported
    if isinstance(outcome, RateLimited) and not target.provider_config.count_429_tokens:
        return Cost(1, 0, 0)
    return None


def learn(rt, p: Prepared, usage: dict[str, Any]) -> None:
    """Feed the prompt size the upstream reported to the shared estimator (never fails a
    call: the estimate only stays where it was)."""
    try:
        prompt = int(usage.get("prompt_tokens") or 0)
    except (TypeError, ValueError):
        return
    if prompt > 0 and p.features is not None:
        with contextlib.suppress(QuotaUnavailable):
            rt.quota(p.simulated).learner.observe(p.target, p.features, prompt)


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
