"""Scripted failure injection: queued per provider (optionally per model), used in order.

Injected answers consume no simulated quota and are never over-limit: they test the
dispatcher's error handling, not its pacing.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

from dispatcher.config.models import Per, Unit
from workers.simulator.accounting import Ledger
from workers.simulator.dialects import Answer, Dialect

KINDS = ("500", "502", "503", "timeout", "malformed", "429", "429_daily", "400", "400_param",
         "401", "403", "404", "413", "context", "error_in_200")

# kind -> (ERRORS key, message)
_PLAIN: dict[str, tuple[str, str]] = {
    "500": ("server", "Internal server error (simulated)"),
    "502": ("bad_gateway", "Bad gateway (simulated)"),
    "503": ("unavailable", "Service unavailable (simulated)"),
    "400": ("bad_request", "Invalid request: the job was rejected by the upstream "
                           "(simulated)"),
    "400_param": ("unsupported_param", "Unsupported parameter: 'simulated_param' is not "
                                       "supported with this model."),
    "401": ("auth", "Invalid API Key (simulated)"),
    "403": ("forbidden", "You do not have access to this model (simulated)"),
    "404": ("not_found", "The model does not exist or you do not have access to it "
                         "(simulated)"),
    "413": ("too_large", "Request Entity Too Large (simulated)"),
    "context": ("context", "This model's maximum context length is exceeded by your messages "
                           "(simulated). Please reduce the length of the messages."),
}


@dataclass(frozen=True)
class Fault:
    kind: str
    model: str | None = None
    retry_after: float | None = None


class FaultQueue:
    """Per provider, one ordered list; a request takes the first entry matching its model."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Fault]] = {}

    def add(self, provider: str, fault: Fault, count: int = 1) -> None:
        if fault.kind not in KINDS:
            raise ValueError(f"unknown fault kind {fault.kind!r}; one of {', '.join(KINDS)}")
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._queues.setdefault(provider, deque()).extend([fault] * count)

    def take(self, provider: str, model: str) -> Fault | None:
        with self._lock:
            queue = self._queues.get(provider)
            for i, fault in enumerate(queue or ()):
                if fault.model in (None, model):
                    del queue[i]  # type: ignore[union-attr]
                    return fault
        return None

    def pending(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()


def render(fault: Fault, dialect: Dialect, target: str, model: str, ledger: Ledger) -> Answer:
    """The answer a fault produces, in the provider's dialect."""
    if fault.kind == "timeout":
        return Answer(0, hold=True)
    if fault.kind == "malformed":
        return Answer(200, b'{"id": "chatcmpl-sim", "object": "chat.completion", "choi',
                      {"content-type": "application/json"})
    if fault.kind == "error_in_200":
        return dialect.error_in_200(model)
    if fault.kind in ("429", "429_daily"):
        slow = fault.kind == "429"
        wait = fault.retry_after if fault.retry_after is not None else (1.0 if slow else None)
        unit = Unit.requests if slow else dialect.daily_unit
        hit = ledger.hypothetical(target, unit, Per.minute if slow else Per.day, wait)
        views = ledger.views(target)
        answer = (dialect.slow_down if slow else dialect.rate_limited)(hit, model, views)
        if fault.retry_after is not None:
            answer.headers["retry-after"] = str(math.ceil(fault.retry_after))
        return answer
    kind, message = _PLAIN[fault.kind]
    return dialect.error(kind, message, status=int(fault.kind) if fault.kind.isdigit() else None)
