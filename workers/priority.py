"""Batch priorities: ``high``, ``normal``, ``low`` and the share each gets.

A priority is a weight (``settings.yaml`` ``priorities``); a batch's jobs are spaced in its
waiting set by ``1 / share``, so while batches of several priorities wait for the same
targets, each is served in proportion to its weight: higher priorities go first, and a
lower one still gets its minimum share (it never starves). Within a priority, batches
interleave job by job as before. The score is fixed when the batch is created: no
process has to re-score waiting jobs.

    >>> from dispatcher.config.models import PrioritySettings
    >>> share("high", PrioritySettings()), share("low", PrioritySettings())
    (1.0, 0.01)
"""

from __future__ import annotations

from typing import get_args

from dispatcher.config.models import Priority, PrioritySettings

PRIORITIES: tuple[str, ...] = get_args(Priority)
DEFAULT = "normal"


def check(priority: str) -> str:
    """The priority, or ValueError naming the allowed ones."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority {priority!r}: expected one of {', '.join(PRIORITIES)}")
    return priority


def share(priority: str, weights: PrioritySettings | None = None) -> float:
    """The priority's weight relative to the highest one, in (0, 1]."""
    w = weights or PrioritySettings()
    values = {"high": w.high, "normal": w.normal, "low": w.low}
    return values[check(priority)] / max(values.values())
