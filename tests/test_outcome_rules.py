"""The pure outcome table of a call (workers/caller.py: next_step)."""

from __future__ import annotations

import pytest

from workers.caller import backoff_s, next_step
from workers.providers.outcomes import (
    JobRejected,
    RateLimited,
    Success,
    TargetRejected,
    Transient,
)

WINDOWS = {"a/small": 8_000, "b/mid": 32_000, "c/big": 128_000}


def step(outcome, retries_here=0, max_retries=2, target="a/small"):
    return next_step(outcome, target, retries_here, max_retries, WINDOWS)


def test_success_completes_and_counts_an_attempt():
    s = step(Success({"choices": []}, {"total_tokens": 3}))
    assert (s.action, s.count_attempt) == ("complete", True)


def test_429_waits_again_without_counting_an_attempt():
    s = step(RateLimited(429, {}, 2.0, "model", False, "slow down"))
    assert (s.action, s.count_attempt, s.exclude) == ("wait_again", False, ())


def test_transient_errors_retry_then_move_on():
    t = Transient(503, {}, "unavailable")
    assert step(t, retries_here=0).action == "retry"
    assert step(t, retries_here=1).action == "retry"
    last = step(t, retries_here=2)
    assert (last.action, last.exclude) == ("next_target", ("a/small",))


@pytest.mark.parametrize("kind", ["auth", "not_found", "too_large", "unsupported_param",
                                  "no_vision"])
def test_target_errors_move_to_the_next_target(kind):
    s = step(TargetRejected(400, {}, kind, "no"))
    assert (s.action, s.exclude) == ("next_target", ("a/small",))


def test_context_overflow_skips_every_window_no_larger():
    s = step(TargetRejected(400, {}, "context_overflow", "too long"), target="b/mid")
    assert s.action == "next_target" and set(s.exclude) == {"a/small", "b/mid"}


def test_a_bad_job_fails_at_once():
    assert step(JobRejected(400, {"error": {}}, "bad request")).action == "fail"


def test_backoff_is_jittered_and_capped():
    values = [backoff_s(10) for _ in range(200)]
    assert all(0 <= v <= 8.0 for v in values) and len(set(values)) > 100
