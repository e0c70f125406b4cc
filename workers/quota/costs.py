"""What a job costs on a target, before the call (estimate) and after it (usage).

Pure functions: no Redis, no network. The estimate is an upper bound on purpose —
the prompt is counted with a heuristic biased above what providers' tokenizers count,
and the output is counted as the full ``max_tokens`` actually sent upstream — so a
reservation never admits more than the upstream will count; reconcile refunds the rest.

    >>> from dispatcher.config.models import QuotaSettings
    >>> estimate_prompt_tokens([{"role": "user", "content": "hello"}], QuotaSettings())
    10
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dispatcher.config.models import JobSettings, ModelConfig, QuotaSettings, Unit

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


def _text_of(content: Any) -> tuple[int, int]:
    """(characters of text, number of image parts) in a message's content."""
    if content is None:
        return 0, 0
    if isinstance(content, str):
        return len(content), 0
    chars = images = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                chars += len(str(part))
            elif part.get("type") == "image_url":
                images += 1
            else:
                chars += len(str(part.get("text", ""))) + 8
    else:
        chars = len(str(content))
    return chars, images


def count_images(messages: list[dict[str, Any]]) -> int:
    return sum(_text_of(m.get("content"))[1] for m in messages if isinstance(m, dict))


def estimate_prompt_tokens(messages: list[dict[str, Any]], q: QuotaSettings) -> int:
    """Characters / ``chars_per_token`` (3 by default, where tokenizers average ~4),
    plus a per-message overhead and a fixed cost per image; rounded up."""
    chars = images = 0
    for m in messages:
        if not isinstance(m, dict):
            continue
        c, i = _text_of(m.get("content"))
        chars += c + len(str(m.get("role", ""))) + len(str(m.get("name", "")))
        for call in m.get("tool_calls") or []:
            chars += len(str(call))
        images += i
    per_message = q.message_overhead_tokens * len(messages)
    return math.ceil(chars / q.chars_per_token) + per_message + images * q.image_tokens + 3


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


def estimate_cost(
    body: dict[str, Any], model: ModelConfig, q: QuotaSettings, jobs: JobSettings
) -> Cost:
    """The reservation for one call of ``body`` on ``model``: an upper bound."""
    prompt = estimate_prompt_tokens(body.get("messages") or [], q)
    out = max_tokens_sent(body, model, jobs)
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
