"""Prometheus metrics of a worker process (stub: the operations work fills it in)."""

from __future__ import annotations

from typing import Any


def record_call(target: str, outcome: str, latency_s: float | None, usage: Any) -> None:
    """One upstream call ended: ``outcome`` is the Outcome class name (Success, RateLimited...)."""


def record_refusal(target: str, limit: str | None) -> None:
    """A reservation was refused by ``limit``."""
