"""Reservation classes: what share of a limit a reservation may take.

A calendar limit may keep a reserve (``reserve: {share: 0.2, for: interactive}``): batch
jobs see only ``limit x (1 - share)`` of it, interactive requests the whole limit. One
definition, used by the quota engine (which passes the class's limit to its reserve
script) and by the forecast (which must see exactly what the workers will see).

    >>> from dispatcher.config.models import Limit
    >>> lim = Limit.model_validate({"unit": "requests", "limit": 1000, "per": "day",
    ...                             "reserve": {"share": 0.2}})
    >>> class_cap(1000, lim, BATCH), class_cap(1000, lim, INTERACTIVE)
    (800, 1000)
"""

from __future__ import annotations

import math

from dispatcher.config.models import Limit

BATCH = "batch"
INTERACTIVE = "interactive"
CLASSES = (BATCH, INTERACTIVE)


def check_class(klass: str) -> str:
    """The class, or ValueError naming the known ones."""
    if klass not in CLASSES:
        raise ValueError(f"reservation class {klass!r}: expected one of {', '.join(CLASSES)}")
    return klass


def class_cap(cap: int, limit: Limit, klass: str) -> int:
    """The part of ``cap`` (the limit in charged units) a reservation of ``klass`` may use.

    The batch share is rounded down: a reserve is never smaller than asked."""
    if check_class(klass) == INTERACTIVE or limit.reserve is None:
        return cap
    return math.floor(cap * (1 - limit.reserve.share) + 1e-9)  # 0.7 * 1000 is 699.999...


def reserved_units(limit: Limit) -> int:
    """How many of the limit's own units are kept for interactive use (0 without a reserve)."""
    return limit.limit - class_cap(limit.limit, limit, BATCH)
