"""JSON as every reader downstream accepts it, decoded without a way to crash.

Python's ``json.loads`` takes ``NaN`` and ``Infinity`` (not JSON), turns ``1e400`` into
``inf``, raises a bare ``ValueError`` on an integer of more than 4,300 digits and a
``RecursionError`` on deep nesting. Request lines (:mod:`dispatcher.batchfile`) and
upstream answers (:mod:`workers.providers.adapters`) both go through :func:`loads`, which
turns each of these into one :class:`JSONRefused` with a reason a user can read.

    >>> loads('{"n": 1.5}')
    {'n': 1.5}
    >>> try:
    ...     loads('{"n": NaN}')
    ... except JSONRefused as exc:
    ...     print(exc)
    NaN is not JSON (numbers must be finite)
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_INT_DIGITS = 40
"""Longest integer accepted: a 128-bit integer has 39 digits. Valid JSON an upstream may
well take (an extension field's id) passes; a 5,000-digit integer, which costs quadratic
time to convert and that no reader downstream takes, is refused."""


class JSONRefused(ValueError):
    """The text is not strict JSON, or holds a number no reader downstream can take."""


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise JSONRefused(f"an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = f"{text[:24]}..." if len(text) > 24 else text
        raise JSONRefused(f"the number {shown} is beyond the range of a double")
    return value


def _parse_constant(name: str) -> Any:
    raise JSONRefused(f"{name} is not JSON (numbers must be finite)")


def loads(text: str | bytes) -> Any:
    """Decode strict JSON, or raise :class:`JSONRefused` (never another exception)."""
    try:
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                          parse_constant=_parse_constant)
    except JSONRefused:
        raise
    except json.JSONDecodeError as exc:
        raise JSONRefused(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise JSONRefused("nested too deeply to decode (hundreds of levels)") from None
    except (ValueError, TypeError) as exc:  # e.g. bytes in no UTF encoding
        raise JSONRefused(f"invalid JSON: {exc}") from None
