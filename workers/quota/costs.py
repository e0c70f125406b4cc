"""What a job costs on a target, before the call (estimate) and after it (usage).

Pure functions: no Redis, no network. The estimate is an upper bound on purpose —
the prompt is measured by kind of text at rates biased above what providers' tokenizers
count (scaled by what :mod:`workers.quota.estimate` learned, with a margin), and the
output is counted as the full ``max_tokens`` actually sent upstream, once per choice — so
a reservation never admits more than the upstream will count; reconcile refunds the rest.

    >>> from dispatcher.config.models import QuotaSettings
    >>> estimate_prompt_tokens([{"role": "user", "content": "hello"}], QuotaSettings())
    14
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatcher.config.models import JobSettings, ModelConfig, QuotaSettings, Unit
from workers.quota.textkinds import Features, count_images, prompt_features, prompt_tokens

__all__ = ["Cost", "NEURON_SCALE", "choices", "count_images", "estimate_cost",
           "estimate_prompt_tokens", "max_tokens_sent", "neurons_milli", "requested_max_tokens",
           "usage_cost"]

# Neurons are kept in thousandths so Redis arithmetic stays in integers.
NEURON_SCALE = 1000


@dataclass(frozen=True)
class Cost:
    """Units one call consumes: requests, tokens (prompt + completion), milli-neurons."""

    requests: int = 1
    tokens: int = 0
    milli_neurons: int = 0

    def of(self, unit: Unit) -> int:
        if unit is Unit.requests:
            return self.requests
        if unit is Unit.tokens:
            return self.tokens
        return self.milli_neurons

    @property
    def neurons(self) -> float:
        return self.milli_neurons / NEURON_SCALE


def estimate_prompt_tokens(messages: list[dict[str, Any]], q: QuotaSettings,
                           factors: Mapping[str, float] | None = None) -> int:
    """The prompt estimate of ``messages`` alone (see :mod:`workers.quota.textkinds`):
    each kind of text at its conservative default rate (times its learned factor), plus a
    per-message overhead and a fixed cost per image; rounded up."""
    return prompt_tokens(prompt_features({"messages": messages}, q), q, factors)


def requested_max_tokens(body: dict[str, Any]) -> int | None:
    """The job's own output cap: ``max_completion_tokens`` (current name) or ``max_tokens``."""
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return int(value) if isinstance(value, int | float) and value > 0 else None


def max_tokens_sent(body: dict[str, Any], model: ModelConfig, jobs: JobSettings) -> int:
    """The ``max_tokens`` sent upstream: the job's own, else a default, never above the cap."""
    wanted = requested_max_tokens(body) or model.default_max_tokens or jobs.default_max_tokens
    return min(wanted, model.max_output_tokens)


def neurons_milli(model: ModelConfig, prompt_tokens: int, completion_tokens: int) -> int:
    if model.neurons is None:
        return 0
    n = (
        prompt_tokens * model.neurons.input_per_million
        + completion_tokens * model.neurons.output_per_million
    ) / 1e6
    return math.ceil(n * NEURON_SCALE)


def choices(body: dict[str, Any]) -> int:
    """``n``: how many completions the upstream writes (and counts) for one request."""
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def estimate_cost(
    body: dict[str, Any], model: ModelConfig, q: QuotaSettings, jobs: JobSettings,
    factors: Mapping[str, float] | None = None, features: Features | None = None,
) -> Cost:
    """The reservation for one call of ``body`` on ``model``: an upper bound. Everything
    sent counts toward the prompt; the output is the ``max_tokens`` sent, once per choice
    (``n``). ``factors``: what the estimator learned per kind of text (none: defaults)."""
    features = features or prompt_features(body, q)
    prompt = prompt_tokens(features, q, factors)
    out = max_tokens_sent(body, model, jobs) * choices(body)
    return Cost(1, prompt + out, neurons_milli(model, prompt, out))


def usage_cost(usage: dict[str, Any] | None, model: ModelConfig) -> Cost | None:
    """The cost the upstream reported, or None when it reported no usable ``usage``."""
    if not isinstance(usage, dict):
        return None
    try:
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        total = int(usage.get("total_tokens") or prompt + completion)
    except (TypeError, ValueError):
        return None
    return Cost(1, max(total, prompt + completion), neurons_milli(model, prompt, completion))
