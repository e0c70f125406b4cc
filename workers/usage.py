"""Daily usage per target, kept in Redis for ``dispatch report``.

Prometheus counters die with the process and are per worker; the savings report needs
totals per UTC day across every worker and restart, so each upstream call also adds to one
Redis hash per day (and per mode: simulated traffic never mixes with real traffic)::

    {ns}:usage:live:<YYYY-MM-DD>   HASH  "<provider/model>|<field>" -> integer
    {ns}:usage:sim:<YYYY-MM-DD>    (the same for simulated traffic)

Fields: ``requests`` (upstream calls, any outcome), ``ok`` (calls that succeeded),
``prompt_tokens``, ``completion_tokens``, ``milli_neurons`` (thousandths, so HINCRBY stays
integer). Keys live ``RETENTION_DAYS`` after their last write.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

import redis

from workers.quota.costs import NEURON_SCALE

log = logging.getLogger("dispatch.usage")

RETENTION_DAYS = 400
FIELDS = ("requests", "ok", "prompt_tokens", "completion_tokens", "milli_neurons")
SEP = "|"


def utc_day(epoch: float | None = None) -> str:
    """The UTC calendar day (``YYYY-MM-DD``) usage is filed under."""
    return datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC).strftime(
        "%Y-%m-%d"
    )


def usage_key(namespace: str, day: str, simulated: bool) -> str:
    return f"{namespace}:usage:{'sim' if simulated else 'live'}:{day}"


@dataclass
class Usage:
    """What one target used (over a day, or summed over several)."""

    requests: int = 0
    ok: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    milli_neurons: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def neurons(self) -> float:
        return self.milli_neurons / NEURON_SCALE

    def add(self, other: Usage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def tokens_of(usage: Any) -> tuple[int, int]:
    """(prompt, completion) tokens of an OpenAI ``usage`` dict; (0, 0) when unusable."""
    if not isinstance(usage, dict):
        return 0, 0
    try:
        prompt = max(0, int(usage.get("prompt_tokens") or 0))
        completion = max(0, int(usage.get("completion_tokens") or 0))
        total = int(usage.get("total_tokens") or 0)
    except (TypeError, ValueError):
        return 0, 0
    if not completion and total > prompt:  # some upstreams report only the total
        completion = total - prompt
    return prompt, completion


def queue_usage(pipe: Any, namespace: str, target: str, simulated: bool, *, ok: bool,
                prompt_tokens: int = 0, completion_tokens: int = 0, milli_neurons: int = 0,
                at: float | None = None) -> None:
    """Add one upstream call to its day's hash: the commands, queued on a pipeline the
    caller executes (with the job's own writes, or alone by :func:`record_usage`)."""
    key = usage_key(namespace, utc_day(at), simulated)
    pipe.hincrby(key, f"{target}{SEP}requests", 1)
    if ok:
        pipe.hincrby(key, f"{target}{SEP}ok", 1)
    for name, value in (("prompt_tokens", prompt_tokens),
                        ("completion_tokens", completion_tokens),
                        ("milli_neurons", milli_neurons)):
        if value:
            pipe.hincrby(key, f"{target}{SEP}{name}", int(value))
    pipe.expire(key, RETENTION_DAYS * 86400)


def usage_writer(rt: Any, target: str, usage: Any, simulated: bool, ok: bool = True,
                 at: float | None = None) -> Callable[[Any], None]:
    """Queues one call's usage on a pipeline (so it can ride with the job's own writes)."""
    from workers.quota.costs import neurons_milli

    prompt, completion = tokens_of(usage)
    milli = 0
    with contextlib.suppress(KeyError, ValueError):  # target no longer configured
        milli = neurons_milli(rt.config.target(target).model, prompt, completion)

    def write(pipe: Any) -> None:
        queue_usage(pipe, rt.namespace, target, simulated, ok=ok, prompt_tokens=prompt,
                    completion_tokens=completion, milli_neurons=milli, at=at)

    return write


def record_usage(rt: Any, target: str, usage: Any, simulated: bool, ok: bool = True,
                 at: float | None = None) -> None:
    """Persist one call's usage via a :class:`~workers.runtime.Runtime`.

    Never raises: losing a report line must not fail a job whose answer is already in
    hand, so Redis errors are logged and dropped."""
    try:
        pipe = rt.r.pipeline(transaction=False)
        usage_writer(rt, target, usage, simulated, ok, at)(pipe)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("usage of %s not recorded (Redis: %s)", target, exc)


def days_back(n: int, today: date | None = None) -> list[str]:
    """The last ``n`` UTC days, oldest first, ending today."""
    end = today or datetime.now(UTC).date()
    return [(end - timedelta(days=i)).isoformat() for i in range(n - 1, -1, -1)]


def parse_hash(raw: dict[Any, Any]) -> dict[str, Usage]:
    """One day's hash -> usage per target (unknown fields are ignored)."""
    out: dict[str, Usage] = {}
    for k, v in raw.items():
        k = k.decode() if isinstance(k, bytes) else str(k)
        target, sep, name = k.rpartition(SEP)
        if not sep or name not in FIELDS:
            continue
        u = out.setdefault(target, Usage())
        setattr(u, name, getattr(u, name) + int(v))
    return out


def load_usage(r: redis.Redis, namespace: str, days: Iterable[str],
               simulated: bool) -> dict[str, dict[str, Usage]]:
    """Usage per day per target for ``days`` (days without traffic are absent)."""
    days = list(days)
    pipe = r.pipeline(transaction=False)
    for d in days:
        pipe.hgetall(usage_key(namespace, d, simulated))
    return {d: parse_hash(raw) for d, raw in zip(days, pipe.execute(), strict=True) if raw}
