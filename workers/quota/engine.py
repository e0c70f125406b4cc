"""The quota engine: atomic, all-or-nothing reservations against every limit of a target.

A provider's quota is never exceeded by any number of processes sharing one Redis, and
none of it is wasted. One Lua script checks every limit that applies to a target
(provider-wide and per model, from ``Target.limits()``) on the server's clock and, only
if all of them pass, charges them all; otherwise it charges nothing and says which limit
refused and how long until it would pass.

Why a weighted sliding log and not GCRA or a token bucket: those admit up to ``B + r*T``
in any window ``T``, so never exceeding ``L`` forces ``B + r*T <= L``: the long-run use is
capped at ``(L - B)/L`` and ``B`` must exceed the largest request's cost (1,500 tokens
against 6,000 tokens/minute leaves 75% of the quota usable). A log of reservations, each
weighted by its cost, is exact for half-open windows and lets 100% of the limit be used;
its memory grows with the reservations per window, not with units (a 40M tokens/minute
limit costs one entry per call, not 40M). Rolling windows are stretched by the timing
margin (``settings.quota.timing_margin_ms`` + ``timing_margin_pct``, at most 1% of the
window) so requests spaced by the window at reservation still arrive a window apart after
send-time jitter.

Calendar limits (day, month) are integer counters per period in the provider's time zone;
Python computes the period and its bounds, the script checks that the *server* time lies
in them (otherwise Python recomputes from the server's time and retries), so a machine
with a skewed clock still charges the right day.

Key layout (``{provider}`` is a Redis Cluster hash tag: one slot per provider)::

    {ns}:q:limits                                 fingerprint of the limits in force
    {ns}:q:{live|sim}:{<provider>}:p:<unit>:<per>            provider-wide sliding log (ZSET)
    {ns}:q:{live|sim}:{<provider>}:p:<unit>:<per>:<period>   provider-wide calendar counter
    {ns}:q:{live|sim}:{<provider>}:m:<model>:<unit>:<per>[:<period>]   the same, per model
    {ns}:q:{live|sim}:{<provider>}:cool                      cooldowns (HASH p, m:<model>)
    {ns}:q:{live|sim}:{<provider>}:r:<token>                 reservation record (HASH)
    {ns}:q:{live|sim}:{<provider>}:est:<model>               prompt estimator (estimate.py)

A sliding log's members are ``"<cost>:<token>"`` scored by server time in microseconds;
its running sum is the member ``#`` with score ``-sum`` (so it expires with the log).
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dispatcher.config.loader import Config, Target
from dispatcher.config.models import Per, Unit
from workers import wire
from workers.quota.classes import BATCH, check_class, class_cap, reserved_units
from workers.quota.costs import Cost
from workers.quota.limits import (
    CALENDAR_SLACK_S,
    SCOPE_MODEL,
    SCOPE_PROVIDER,
    US,
    LimitSpec,
    Period,
    calendar_period,
    charge_scale,
    fingerprint_key,
    key_prefix,
    limit_specs,
    member_cost,
    rolling_ttl_ms,
    unit_code,
    window_us,
)

if TYPE_CHECKING:
    from workers.quota.estimate import Learner

LUA_DIR = Path(__file__).with_name("lua")
RECORD_TTL_MS = 25 * 3600 * 1000
"""A reservation record outlives the longest rolling window and a day of late reconciles."""
RECORD_TTL_B = b"%d" % RECORD_TTL_MS
GRANTS_KEPT = 4096
"""Grant times remembered per process (a request leaves within moments of its grant)."""

_OK, _REFUSED, _NEVER, _STALE, _COOLDOWN, _DUPLICATE = 1, 0, 2, 3, 4, 5

ScriptCall = tuple[Any, list[Any], list[Any]]
"""Another script to run in a reservation's round trip: ``(registered script, keys, args)``."""


class QuotaUnavailable(RuntimeError):
    """Redis cannot be reached (or answered with an error): fail closed, send nothing."""


class LimitsMismatch(RuntimeError):
    """This process's configured limits differ from those in force in Redis."""


@dataclass(frozen=True)
class Reservation:
    """The answer to :meth:`QuotaEngine.reserve` or :meth:`QuotaEngine.probe`.

    Granted: ``reservation_id`` names the charge, for :meth:`QuotaEngine.reconcile`.
    Refused: ``limit`` says which limit (or cooldown) refused, ``wait_s`` when to try again
    (the longest wait among the refusing limits); ``never`` means the cost exceeds a limit
    outright and no wait helps (``wait_s`` is then ``inf``). ``at`` is the server time of
    the decision (epoch seconds).

        >>> r = engine.reserve(target, Cost(1, 1200))            # doctest: +SKIP
        >>> if not r.granted: retry_in(r.wait_s)                  # doctest: +SKIP
    """

    granted: bool
    reservation_id: str | None
    wait_s: float
    limit: str | None
    never: bool = False
    at: float = 0.0


@dataclass(frozen=True)
class LimitState:
    """One configured limit as :meth:`QuotaEngine.snapshot` sees it (``model`` is None for a
    provider-wide limit; ``resets_at`` is when the oldest charge leaves a rolling window,
    or the period end of a calendar limit, or None when nothing is charged)."""

    provider: str
    model: str | None
    unit: Unit
    per: Per
    limit: int
    used: float  # in the limit's unit: neurons may be fractional
    remaining: float
    resets_at: float | None
    reserved: float = 0  # kept for interactive requests: batch jobs stop this much short

    @property
    def text(self) -> str:
        return f"{self.limit} {self.unit.value}/{self.per.value}"


@dataclass
class _Plan:
    """Everything about a target that does not change between reservations."""

    provider: str
    prefix: str
    tz: str
    cool_key: str
    cool_field: str
    specs: list[LimitSpec]
    wins: list[int]  # window_us of rolling limits (0 for calendar)
    kinds: list[bytes]  # script's kind+unit code per limit: b"zt", b"cr", ...
    static: list[tuple[bytes, ...]]  # rolling: (limit, window_us, ttl_ms, b"")
    keys_b: list[bytes]
    limits_b: list[bytes]
    batch_limits_b: list[bytes]  # calendar limits less their reserve (class "batch")
    batch_caps: list[int]
    cool_key_b: bytes
    cool_field_b: bytes
    record_prefix: bytes
    head_reserve: bytes = b"r"
    head_probe: bytes = b"p"


def _units(charged: int, scale: int) -> float:
    """Charged units back to configured ones (milli-neurons -> neurons)."""
    return charged if scale == 1 else charged / scale


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _load(name: str, prelude: str) -> str:
    return prelude + "\n" + (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")


class QuotaEngine:
    """Reserve quota before every upstream call; reconcile with the reported usage after.

    Every process sharing one Redis shares the quota; Redis unreachable means
    :class:`QuotaUnavailable` (never send).

        engine = QuotaEngine(redis_client(), config)
        engine.ensure_limits()                      # refuse to run with other limits
        target = config.target("groq/llama-3.1-8b-instant")
        r = engine.reserve(target, estimate_cost(body, target.model, q, jobs))
        if r.granted:
            response = call_upstream(...)
            engine.reconcile(r.reservation_id, usage_cost(response["usage"], target.model))
        elif r.never:
            fail("too large for", r.limit)
        else:
            retry_later(r.wait_s)
    """

    def __init__(
        self,
        redis: redis.Redis,
        config: Config,
        namespace: str = "dispatch",
        simulated: bool = False,
    ) -> None:
        self.redis = redis
        self.config = config
        self.namespace = namespace
        self.simulated = simulated
        self.margin_ms = config.settings.quota.timing_margin_ms
        self.margin_pct = config.settings.quota.timing_margin_pct
        self._plans: dict[str, _Plan] = {}
        self._periods: dict[tuple[str, Per], Period] = {}
        self._skew = 0.0  # server clock minus ours, learned from stale-period replies
        self._granted: OrderedDict[str, float] = OrderedDict()
        """Server time of each recent grant, by token: a late send finds its period."""
        prelude = (LUA_DIR / "prelude.lua").read_text(encoding="utf-8")
        self._scripts = {
            name: redis.register_script(_load(name, prelude))
            for name in ("reserve", "reconcile", "shift", "observe", "cooldown", "status",
                         "lift", "learn")
        }

    @cached_property
    def learner(self) -> Learner:
        """The prompt estimator, learning from the usage answers report (estimate.py)."""
        from workers.quota.estimate import Learner

        return Learner(self)

    def key_prefix(self, provider: str) -> str:
        """``{ns}:q:{live|sim}:{<provider>}:``, the prefix of every key of one provider."""
        return key_prefix(self.namespace, self.simulated, provider)

    # ----------------------------------------------------------------- plumbing
    def _plan(self, target: Target) -> _Plan:
        plan = self._plans.get(target.key)
        if plan is None:
            prefix = key_prefix(self.namespace, self.simulated, target.provider)
            specs = limit_specs(prefix, target.provider, target.model.id, target.limits())
            wins = [window_us(s.limit.per, self.margin_ms, self.margin_pct) if s.rolling else 0
                    for s in specs]
            plan = _Plan(
                provider=target.provider,
                prefix=prefix,
                tz=target.provider_config.timezone,
                cool_key=prefix + "cool",
                cool_field="m:" + target.model.id,
                specs=specs,
                wins=wins,
                kinds=[(("z" if s.rolling else "c") + unit_code(s.limit.unit)).encode()
                       for s in specs],
                static=[
                    (b"%d" % s.cap, b"%d" % w, b"%d" % rolling_ttl_ms(w), b"")
                    if w else () for s, w in zip(specs, wins, strict=True)
                ],
                keys_b=[s.base.encode() for s in specs],
                limits_b=[b"%d" % s.cap for s in specs],
                batch_limits_b=[b"%d" % class_cap(s.cap, s.limit, BATCH) for s in specs],
                batch_caps=[class_cap(s.cap, s.limit, BATCH) for s in specs],
                cool_key_b=(prefix + "cool").encode(),
                cool_field_b=("m:" + target.model.id).encode(),
                record_prefix=(prefix + "r:").encode(),
            )
            self._plans[target.key] = plan
        return plan

    def _period(self, tz: str, per: Per, now: float) -> Period:
        p = self._periods.get((tz, per))
        if p is None or not p.contains(now):
            p = calendar_period(per, tz, now)
            self._periods[(tz, per)] = p
        return p

    def _eval(self, name: str, keys: list[Any], args: list[Any]) -> Any:
        """EVALSHA, reloading the script after NOSCRIPT (restart, failover, SCRIPT FLUSH);
        any Redis failure becomes QuotaUnavailable: the caller must not send."""
        script = self._scripts[name]
        try:
            try:
                return self._evalsha(script.sha, keys, args)
            except NoScriptError:
                script.sha = self.redis.script_load(script.script)
                return self._evalsha(script.sha, keys, args)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise QuotaUnavailable(f"quota store unreachable: {exc}") from exc
        except RedisError as exc:
            raise QuotaUnavailable(f"quota store error: {exc}") from exc

    def _evalsha(self, sha: str, keys: list[Any], args: list[Any]) -> Any:
        """One round trip, packed by hand on a pooled connection (:mod:`workers.wire`:
        redis-py's generic path costs several times the script on a small machine)."""
        return wire.call_one(self.redis, wire.evalsha(sha, keys, args))

    def _evalsha_many(self, calls: list[tuple[str, list[Any], list[Any]]]) -> list[Any]:
        """Several EVALSHAs in one write, one round trip; each reply in order, an error
        reply as its exception."""
        return wire.call_many(self.redis, [wire.evalsha(*call) for call in calls])

    def _eval_along(self, along: ScriptCall, name: str, keys: list[Any],
                    args: list[Any]) -> tuple[Any, Any]:
        """``along`` then the quota script ``name``, in one round trip: ``along``'s reply
        (an error reply as its exception, returned: it must not hide the quota's answer)
        and the quota script's reply (errors raised as :meth:`_eval` does). A script the
        server lost (NOSCRIPT: it did nothing) is loaded and run again alone."""
        script = self._scripts[name]
        other, other_keys, other_args = along
        try:
            got, reply = self._evalsha_many([(other.sha, other_keys, other_args),
                                             (script.sha, keys, args)])
            if isinstance(got, NoScriptError):
                other.sha = self.redis.script_load(other.script)
                try:
                    got = self._evalsha(other.sha, other_keys, other_args)
                except ResponseError as exc:
                    got = exc
            if isinstance(reply, NoScriptError):
                script.sha = self.redis.script_load(script.script)
                reply = self._evalsha(script.sha, keys, args)
            elif isinstance(reply, Exception):
                raise reply
            return got, reply
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise QuotaUnavailable(f"quota store unreachable: {exc}") from exc
        except RedisError as exc:
            raise QuotaUnavailable(f"quota store error: {exc}") from exc

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise QuotaUnavailable(f"quota store unreachable: {exc}") from exc
        except RedisError as exc:
            raise QuotaUnavailable(f"quota store error: {exc}") from exc

    def _server_time(self) -> float:
        sec, usec = self._call(self.redis.time)
        return int(sec) + int(usec) / US

    def _spec(self, target: Target, unit: Unit | str, per: Per | str, scope: str) -> LimitSpec:
        unit, per = Unit(unit), Per(per)
        for s in self._plan(target).specs:
            if s.scope == scope and s.limit.unit is unit and s.limit.per is per:
                return s
        raise KeyError(f"{target}: no {scope} limit of {unit.value}/{per.value} is configured")

    # ------------------------------------------------------------------ reserve
    def reserve(self, target: Target, cost: Cost, reservation_id: str | None = None,
                klass: str = BATCH) -> Reservation:
        """Charge ``cost`` against every limit of ``target`` now, or nothing.

        ``reservation_id`` (optional) names the charge; it must be unique (a duplicate
        raises ValueError). The returned id is ``"<provider>/<id>"``: pass it to
        :meth:`reconcile`. ``klass`` ``"batch"`` (default) stops short of a limit's
        reserve; ``"interactive"`` may use the whole limit (:mod:`workers.quota.classes`)."""
        return self._run(target, cost, 1, reservation_id, probe=False, klass=klass)

    def reserve_along(self, target: Target, cost: Cost, along: ScriptCall,
                      reservation_id: str | None = None,
                      klass: str = BATCH) -> tuple[Reservation, Any]:
        """:meth:`reserve`, with another script sent ahead of it in the same write on the
        same connection: one round trip for both (the HTTP gateway takes a concurrency
        slot this way, :mod:`workers.slots`). The two are independent; the caller settles
        mixed answers. Returns the reservation and ``along``'s reply: None when nothing was
        sent (the cost exceeds a limit outright), an exception when it failed."""
        box: list[Any] = []
        res = self._run(target, cost, 1, reservation_id, probe=False, klass=klass,
                        along=(along, box))
        return res, box[0] if box else None

    def probe(self, target: Target, cost: Cost, count: int = 1,
              klass: str = BATCH) -> Reservation:
        """Would ``count`` × ``cost`` pass now? Consumes and writes nothing."""
        if count < 1:
            raise ValueError("count must be >= 1")
        return self._run(target, cost, count, None, probe=True, klass=klass)

    def _run(
        self, target: Target, cost: Cost, count: int, rid: str | None, probe: bool,
        klass: str = BATCH, along: tuple[ScriptCall, list[Any]] | None = None,
    ) -> Reservation:
        plan = self._plan(target)
        specs = plan.specs
        costs = [cost.of(s.limit.unit) for s in specs]
        if check_class(klass) == BATCH:
            caps, limits_b = plan.batch_caps, plan.batch_limits_b
        else:
            caps, limits_b = [s.cap for s in specs], plan.limits_b
        for s, c, cap in zip(specs, costs, caps, strict=True):
            if c < 0:
                raise ValueError(f"negative cost {cost}")
            if c * count > cap:
                return Reservation(False, None, math.inf, s.label, never=True)
        if rid is None:
            token, chosen = os.urandom(8).hex(), b"0"
        else:
            token = rid.removeprefix(plan.provider + "/")
            chosen = b"1"
        count_b, head = b"%d" % count, plan.head_probe if probe else plan.head_reserve
        record = plan.record_prefix + token.encode()
        for _attempt in range(4):
            now = time.time() + self._skew
            # Pre-encoded bytes wherever possible: redis-py passes them through untouched.
            keys: list[Any] = [plan.cool_key_b, record]
            args: list[Any] = [head, token, count_b, plan.cool_field_b, chosen, RECORD_TTL_B]
            for i, s in enumerate(specs):
                static = plan.static[i]
                if static:
                    keys.append(plan.keys_b[i])
                    args += (plan.kinds[i], b"%d" % costs[i], *static)
                else:
                    p = self._period(plan.tz, s.limit.per, now)
                    keys.append(f"{s.base}:{p.key}")
                    args += (plan.kinds[i], b"%d" % costs[i], limits_b[i], p.start, p.end,
                             p.end + CALENDAR_SLACK_S)
            if along is None:
                reply = self._eval("reserve", keys, args)
            else:  # the first try only: a retry below re-sends the reservation alone
                got, reply = self._eval_along(along[0], "reserve", keys, args)
                along[1].append(got)
                along = None
            status, at = int(reply[0]), int(reply[1]) / US
            if status == _OK:
                if probe:
                    return Reservation(True, None, 0.0, None, at=at)
                self._granted[token] = at
                if len(self._granted) > GRANTS_KEPT:
                    self._granted.popitem(last=False)
                return Reservation(True, f"{plan.provider}/{token}", 0.0, None, at=at)
            if status == _REFUSED:
                return Reservation(False, None, int(reply[2]) / US,
                                   specs[int(reply[3]) - 1].label, at=at)
            if status == _STALE:
                # Our clock disagrees with the server's about the period: adopt its time.
                self._skew = at - time.time()
                self._periods.clear()
                continue
            if status == _COOLDOWN:
                who = target.provider if _text(reply[3]) == "p" else target.key
                reason = _text(reply[4]) or "paused"
                return Reservation(False, None, int(reply[2]) / US,
                                   f"{who}: cooldown ({reason})", at=at)
            if status == _NEVER:
                return Reservation(False, None, math.inf, specs[int(reply[3]) - 1].label,
                                   never=True, at=at)
            if status == _DUPLICATE:
                raise ValueError(f"reservation id {rid!r} was already used")
            raise QuotaUnavailable(f"unexpected reply from the reserve script: {reply!r}")
        raise QuotaUnavailable("calendar period kept changing under the reservation")

    def reconcile(self, reservation_id: str, actual: Cost) -> bool:
        """Replace the estimated tokens/neurons of a reservation by the ``actual`` usage
        (refund or debit; requests stay charged unless ``actual.requests`` is 0: a request
        that never left is given back whole). Idempotent: True only for the call that
        applied it; False when already reconciled, expired, or nothing needed reconciling
        (a target with request limits only)."""
        provider, sep, token = reservation_id.partition("/")
        if not sep or provider not in self.config.providers:
            raise ValueError(f"reservation id {reservation_id!r}: expected '<provider>/<id>'")
        prefix = key_prefix(self.namespace, self.simulated, provider)
        reply = self._eval(
            "reconcile", [prefix + "r:" + token],
            [max(actual.tokens, 0), max(actual.milli_neurons, 0), token,
             1 if actual.requests else 0],
        )
        return int(reply) == 1

    def shift(self, target: Target, cost: Cost, reservation_id: str, seconds: float) -> int:
        """The request of a granted reservation left ``seconds`` after the grant: move its
        rolling-window entries forward by that much, so the slot frees when the upstream's
        does, and, when it left after a calendar boundary (midnight, the 1st), move its
        calendar charges to the new period, the one the upstream counts it in. Returns how
        many entries and counters moved."""
        plan = self._plan(target)
        token = reservation_id.partition("/")[2]
        granted = self._granted.pop(token, None)
        if seconds <= 0:
            return 0
        keys: list[Any] = []
        members = []
        for i, s in enumerate(plan.specs):
            if plan.static[i]:
                keys.append(plan.keys_b[i])
                members.append(b"%d:%s" % (cost.of(s.limit.unit), token.encode()))
        moves: list[Any] = []
        move_keys: list[Any] = []
        if granted is not None:
            sent = granted + seconds
            for s in plan.specs:
                if s.rolling:
                    continue
                old = self._period(plan.tz, s.limit.per, granted)
                if sent < old.end:
                    continue
                new = calendar_period(s.limit.per, plan.tz, sent)
                move_keys += [f"{s.base}:{old.key}", f"{s.base}:{new.key}"]
                moves += [cost.of(s.limit.unit), new.end + CALENDAR_SLACK_S]
        if not keys and not moves:
            return 0
        record = plan.record_prefix + token.encode()
        return int(self._eval("shift", [*keys, record, *move_keys],
                              [int(seconds * US), len(keys), *members, *moves]))

    def crosses_period(self, target: Target, reservation_id: str, seconds: float) -> bool:
        """Whether a request leaving ``seconds`` after its grant lands in a later calendar
        period than the one charged (then :meth:`shift` must move the charge)."""
        granted = self._granted.get(reservation_id.partition("/")[2])
        if granted is None:
            return False
        plan = self._plan(target)
        return any(not s.rolling and granted + seconds >= self._period(
            plan.tz, s.limit.per, granted).end for s in plan.specs)

    # ------------------------------------------------------------ upstream feedback
    def cooldown(self, target: Target, seconds: float, scope: str = SCOPE_MODEL,
                 reason: str = "") -> float:
        """Refuse every reservation of the model (or the whole provider) for ``seconds``,
        e.g. after a 429 with Retry-After. Never shortens a longer cooldown. Returns the
        epoch (server time) when it ends."""
        if scope not in (SCOPE_MODEL, SCOPE_PROVIDER):
            raise ValueError(f"scope must be {SCOPE_MODEL!r} or {SCOPE_PROVIDER!r}")
        plan = self._plan(target)
        field = plan.cool_field if scope == SCOPE_MODEL else "p"
        reply = self._eval("cooldown", [plan.cool_key],
                           [field, max(1, int(seconds * US)), reason.replace("\n", " ")])
        return int(reply[0]) / US

    def close_until_reset(self, target: Target, per: Per | str, scope: str = SCOPE_PROVIDER,
                          reason: str = "") -> float:
        """Close until the next reset of ``per`` in the provider's time zone (a "daily quota
        spent" 429). Returns the seconds closed."""
        per = Per(per)
        now = self._server_time()
        if per.rolling:
            seconds = window_us(per, self.margin_ms, self.margin_pct) / US
        else:
            seconds = calendar_period(per, target.provider_config.timezone, now).end - now
        self.cooldown(target, seconds, scope, reason or f"{per.value} quota spent")
        return seconds

    def lift_cooldown(self, target: Target, reason: str, scope: str = SCOPE_MODEL) -> bool:
        """End the model's (or provider's) cooldown now, only if ``reason`` set it (the
        catalog check reopens a model listed again; other pauses stay). True if lifted."""
        plan = self._plan(target)
        field = plan.cool_field if scope == SCOPE_MODEL else "p"
        return int(self._eval("lift", [plan.cool_key], [field, reason.replace("\n", " ")])) == 1

    def cooldown_of(self, target: Target) -> tuple[float, str | None]:
        """Seconds until the target's model and provider cooldowns end, and the reason."""
        plan = self._plan(target)
        now, up, rp, um, rm = self._eval("status", [plan.cool_key], [plan.cool_field])
        best, reason = 0.0, None
        for until, why in ((int(up), rp), (int(um), rm)):
            if until - int(now) > best * US:
                best, reason = (until - int(now)) / US, _text(why) or "paused"
        return best, reason

    def observe(self, target: Target, unit: Unit | str, per: Per | str, remaining: float,
                reset_s: float | None = None, scope: str = SCOPE_MODEL) -> float:
        """The upstream says only ``remaining`` units of this limit are left (someone else
        uses the key): lower our view to match. Calendar: raise the counter to
        ``limit - remaining``. Rolling: add a synthetic charge that leaves the window in
        ``reset_s`` (default: a whole window). ``remaining`` and the result are in the
        limit's unit (neurons, not milli-neurons). Returns the units added (0 if we already
        counted as much); a limit that is not configured is ignored (0)."""
        try:
            spec = self._spec(target, unit, per, scope)
        except KeyError:
            return 0
        plan = self._plan(target)
        lim = spec.limit
        scale = charge_scale(lim.unit)
        left = max(0, min(round(remaining * scale), spec.cap))  # in charged units
        if spec.rolling:
            win = window_us(lim.per, self.margin_ms, self.margin_pct)
            reset_us = win if reset_s is None else int(max(0.0, reset_s) * US)
            reply = self._eval("observe", [spec.base], [
                "z", spec.cap, left, win, reset_us, rolling_ttl_ms(win),
                "obs-" + os.urandom(6).hex(),
            ])
            return _units(max(0, int(reply[0])), scale)
        for _attempt in range(3):
            p = self._period(plan.tz, lim.per, time.time() + self._skew)
            reply = self._eval("observe", [f"{spec.base}:{p.key}"],
                               ["c", spec.cap, left, p.start, p.end,
                                p.end + CALENDAR_SLACK_S])
            if int(reply[0]) >= 0:
                return _units(int(reply[0]), scale)
            self._skew = int(reply[1]) / US - time.time()
            self._periods.clear()
        raise QuotaUnavailable("calendar period kept changing during observe")

    # ----------------------------------------------------------------- reading
    def snapshot(self) -> list[LimitState]:
        """Every configured limit: used, remaining, when it resets (server time)."""
        now = self._server_time()
        now_us = int(now * US)
        rows: list[tuple[str, str | None, LimitSpec, int]] = []
        seen: set[str] = set()
        for target in self.config.targets():
            for spec, win in zip(self._plan(target).specs, self._plan(target).wins, strict=True):
                if spec.base in seen:
                    continue
                seen.add(spec.base)
                rows.append((target.provider, spec.model_id, spec, win))
        pipe = self.redis.pipeline(transaction=False)
        periods: list[Period | None] = []
        for provider, _model, spec, win in rows:
            if spec.rolling:
                pipe.zrangebyscore(spec.base, f"({now_us - win}", "+inf", withscores=True)
                periods.append(None)
            else:
                p = calendar_period(spec.limit.per, self.config.providers[provider].timezone,
                                    now)
                pipe.get(f"{spec.base}:{p.key}")
                periods.append(p)
        replies = self._call(pipe.execute) if rows else []
        out = []
        for (provider, model, spec, win), reply, p in zip(rows, replies, periods, strict=True):
            lim = spec.limit
            if p is None:
                entries = [(int(s), member_cost(m)) for m, s in reply]
                used = sum(c for _, c in entries)
                resets = (min(s for s, _ in entries) + win) / US if entries else None
            else:
                used = int(reply or 0)
                resets = float(p.end)
            used_units = _units(used, charge_scale(lim.unit))
            out.append(LimitState(provider, model, lim.unit, lim.per, lim.limit, used_units,
                                  max(0, lim.limit - used_units), resets,
                                  reserved_units(lim)))
        return out

    # -------------------------------------------------------- limits in force
    def ensure_limits(self) -> str:
        """Record this configuration's limits fingerprint, or refuse to run if Redis holds a
        different one (every process must enforce the same limits)."""
        key = fingerprint_key(self.namespace)
        mine = self.config.limits_fingerprint()
        if self._call(self.redis.set, key, mine, nx=True):
            return mine
        theirs = self._call(self.redis.get, key)
        theirs = _text(theirs) if theirs is not None else None
        if theirs is None:  # removed in between: try once more
            self._call(self.redis.set, key, mine, nx=True)
            return mine
        if theirs != mine:
            raise LimitsMismatch(
                f"the configured limits (fingerprint {mine}) differ from those in force in "
                f"Redis (fingerprint {theirs}, namespace {self.namespace!r}). Every process "
                "must enforce the same limits: to adopt the new ones, stop every worker, "
                "then run `dispatch quota --adopt-limits` with the new configuration."
            )
        return mine

    def adopt_limits(self) -> str:
        """Make this configuration's limits the ones in force (stop every worker first).
        Usage already charged stays charged against the new limits."""
        mine = self.config.limits_fingerprint()
        self._call(self.redis.set, fingerprint_key(self.namespace), mine)
        return mine
