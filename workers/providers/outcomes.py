"""The classified result of one upstream call, and what rate-limit headers report.

Each kind answers one question for the caller — who is at fault and what to do next:

- :class:`Success`: a usable completion; reconcile quota against ``usage``.
- :class:`RateLimited`: pause the provider (or model) for ``retry_after_s``, or close it
  until the calendar reset when ``daily``.
- :class:`Transient`: the upstream hiccuped; retry, perhaps elsewhere.
- :class:`TargetRejected`: this target can never serve this job (or any job, for
  ``auth``/``not_found``); try another target.
- :class:`JobRejected`: the job itself is bad; fail it at once with the upstream's answer.

    >>> match Transient(503, None, "service unavailable"):
    ...     case Transient(status=s): print(f"retry (upstream said {s})")
    retry (upstream said 503)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Scope = Literal["model", "provider"]
RejectKind = Literal[
    "auth", "not_found", "too_large", "unsupported_param", "context_overflow", "no_vision"
]


@dataclass(frozen=True)
class Success:
    """A 2xx answer with ``choices``; ``message["reasoning"]`` is filled from
    ``reasoning_content`` when only that was sent, so readers look in one place.

        >>> Success({"choices": []}, None).status
        200
    """

    body: dict[str, Any]
    usage: dict[str, Any] | None
    status: int = 200


@dataclass(frozen=True)
class RateLimited:
    """The upstream refused for quota. ``daily`` means spent until the calendar reset
    (close the provider/model), otherwise slow down for ``retry_after_s``.

        >>> RateLimited(429, "", 2.0, "model", False, "slow down").scope
        'model'
    """

    status: int
    body: dict[str, Any] | str
    retry_after_s: float | None
    scope: Scope
    daily: bool
    message: str


@dataclass(frozen=True)
class Transient:
    """5xx, timeout, connection error, malformed 200, provider out of capacity.
    ``status`` is None when no HTTP answer arrived.

        >>> Transient(None, None, "timed out").status is None
        True
    """

    status: int | None
    body: dict[str, Any] | str | None
    message: str


@dataclass(frozen=True)
class TargetRejected:
    """The target cannot serve this job: ``auth`` and ``not_found`` concern every job
    on the target (close it); the other kinds only jobs like this one.

        >>> TargetRejected(404, {}, "not_found", "model retired").kind
        'not_found'
    """

    status: int
    body: dict[str, Any] | str
    kind: RejectKind
    message: str


@dataclass(frozen=True)
class JobRejected:
    """Any other 4xx: the request is bad wherever it goes; fail it at once.

        >>> JobRejected(400, {}, "messages: field required").status
        400
    """

    status: int
    body: dict[str, Any] | str
    message: str


Outcome = Success | RateLimited | Transient | TargetRejected | JobRejected


@dataclass(frozen=True)
class Observation:
    """Remaining quota as a provider's rate-limit headers report it, so local counters
    can be corrected when they drift (another client sharing the key, a lost reply).

        >>> Observation("tokens", "minute", 6000, 5990, 0.1, "model").remaining
        5990
    """

    unit: Literal["requests", "tokens"]
    per: Literal["second", "minute", "hour", "day", "month"]
    limit: int | None
    remaining: int
    reset_s: float | None
    scope: Scope
