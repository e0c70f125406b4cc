"""Hypothesis strategies shared by the property tests (tests/test_fuzz_*.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""Fixed seeds (``derandomize``), no example database, no deadline: the same examples on
every run, so a property test cannot flake; 200 examples keep each test to seconds."""


def json_like(special: list[Any], keys: st.SearchStrategy[Any] | None = None,
              max_leaves: int = 16) -> st.SearchStrategy[Any]:
    """Nested values as a decoder may hand them over: every JSON type, unbounded
    integers, NaN and infinities, and the ``special`` values a test cares about."""
    scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
               | st.sampled_from(special))
    return st.recursive(
        scalars,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
            keys if keys is not None else st.text(max_size=6), kids, max_size=4),
        max_leaves=max_leaves,
    )
