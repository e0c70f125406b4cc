"""What the forecast starts from: rules from the configuration, state from Redis.

Reads only (nothing is charged, nothing is sent upstream): the quota engine's view of
every limit, the rolling windows' charges, cooldowns, the waiting sets (the backlog ahead,
with its scores) and the calls in flight. :mod:`dispatcher.forecast` does the rest.

    >>> world, jobs = build(cfg, specs, simulated=True, priority="normal")   # doctest: +SKIP
    >>> forecast = simulate(world, jobs)                                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from dispatcher.config import Config, Target
from dispatcher.forecast import NEW, Forecast, LimitRule, SimJob, TargetRule, World, simulate
from workers.jobstore import fair_score, split_job_id
from workers.priority import share
from workers.quota.classes import BATCH, class_cap
from workers.quota.costs import Cost, estimate_cost, max_tokens_sent, neurons_milli
from workers.quota.limits import US, charge_scale, key_prefix, limit_specs, member_cost, window_us

log = logging.getLogger("dispatch.forecast")

SAMPLE_PER_SET = 32
"""Backlog jobs whose bodies are read per waiting set to estimate the set's typical cost."""

INLINE_MAX_JOBS = 100_000
"""Above this many jobs (batch plus backlog), ``submit``/``run`` and ``status`` skip their
forecast (about a second per 30,000 jobs); ``dispatch plan`` always makes it."""


def _rule_key(provider: str, base_suffix: str) -> str:
    return f"{provider}:{base_suffix}"


def rules(cfg: Config) -> tuple[dict[str, LimitRule], dict[str, TargetRule]]:
    """Every usable target and every limit, as the workers will enforce them on batch jobs
    (the same specs, windows with the timing margin, and the batch share of reserves)."""
    q = cfg.settings.quota
    limits: dict[str, LimitRule] = {}
    targets: dict[str, TargetRule] = {}
    for target in cfg.targets():
        if not cfg.usable(target):
            continue
        tz = target.provider_config.timezone
        keys = []
        for spec in limit_specs(f"{target.provider}:", target.provider, target.model.id,
                                target.limits()):
            lim = spec.limit
            win = window_us(lim.per, q.timing_margin_ms, q.timing_margin_pct) / US \
                if lim.per.rolling else 0.0
            limits[spec.base] = LimitRule(spec.base, spec.label, lim.unit, lim.per,
                                          class_cap(spec.cap, lim, BATCH), win, tz)
            keys.append(spec.base)
        targets[target.key] = TargetRule(target.key, target.provider,
                                         target.provider_config.concurrency, tuple(keys))
    return limits, targets


def costs(body: dict[str, Any], targets: Sequence[str], cfg: Config,
          typical_out: dict[str, float] | None = None,
          ) -> tuple[tuple[Cost | None, ...], tuple[Cost | None, ...]]:
    """What each target would reserve for this body (None: unknown target), and what it
    would keep after reconcile: the estimate with its output part cut to the completion
    tokens the target typically reported (``typical_out``; the estimate when unknown)."""
    q, jobs = cfg.settings.quota, cfg.settings.jobs
    est: list[Cost | None] = []
    kept: list[Cost | None] = []
    for ref in targets:
        try:
            t: Target = cfg.target(ref)
        except (KeyError, ValueError):
            est.append(None)
            kept.append(None)
            continue
        cost = estimate_cost(body, t.model, q, jobs)
        est.append(cost)
        avg = (typical_out or {}).get(ref)
        out = max_tokens_sent(body, t.model, jobs)
        if avg is None or avg >= out:
            kept.append(cost)
            continue
        prompt, reply = cost.tokens - out, math.ceil(avg)
        kept.append(Cost(cost.requests, prompt + reply, neurons_milli(t.model, prompt, reply)))
    return tuple(est), tuple(kept)


def planned_jobs(specs: Sequence[Any], cfg: Config, priority: str, seq: int,
                 typical_out: dict[str, float] | None = None) -> list[SimJob]:
    """The batch to plan, scored as ``create_batch`` will score it."""
    s = share(priority, cfg.settings.priorities)
    out = []
    for i, spec in enumerate(specs):
        est, kept = costs(spec.body, spec.targets, cfg, typical_out)
        out.append(SimJob(fair_score(i, seq, s), tuple(spec.targets), est, NEW, kept))
    return out


def typical_output(r: Any, namespace: str, simulated: bool, days: int = 2,
                   min_calls: int = 3) -> dict[str, float]:
    """Completion tokens per answered call, per target, over the last ``days`` UTC days
    (``dispatch report``'s usage records); targets with fewer than ``min_calls`` are left
    out (their estimate stands)."""
    from workers.usage import Usage, days_back, load_usage

    total: dict[str, Usage] = {}
    for per_target in load_usage(r, namespace, days_back(days), simulated).values():
        for target, u in per_target.items():
            total.setdefault(target, Usage()).add(u)
    return {t: u.completion_tokens / u.ok for t, u in total.items() if u.ok >= min_calls}


def _mean_cost(samples: list[Cost | None]) -> Cost | None:
    got = [c for c in samples if c is not None]
    if not got:
        return None
    return Cost(1, math.ceil(sum(c.tokens for c in got) / len(got)),
                math.ceil(sum(c.milli_neurons for c in got) / len(got)))


def backlog(r: Any, namespace: str, cfg: Config, simulated: bool,
            typical_out: dict[str, float] | None = None) -> list[SimJob]:
    """The jobs waiting now (of the same mode: live or simulated), with their scores; each
    set's cost per target is the mean over a sample of its jobs' bodies."""
    from workers.jobstore import JobStore

    store = JobStore(r, namespace)
    jobs: list[SimJob] = []
    modes: dict[str, bool] = {}
    for sig, (_tag, targets) in store.waitsets().items():
        members = r.zrange(store.wait_key(sig), 0, -1, withscores=True)
        if not members:
            continue
        batches = {split_job_id(m)[0] for m, _ in members} - modes.keys()
        if batches:
            pipe = r.pipeline(transaction=False)
            for b in batches:
                pipe.hget(store.batch_key(b), "simulated")
            for b, flag in zip(batches, pipe.execute(), strict=True):
                modes[b] = str(flag) == "1"
        members = [(m, s) for m, s in members if modes[split_job_id(m)[0]] == simulated]
        if not members:
            continue
        step = max(1, len(members) // SAMPLE_PER_SET)
        pipe = r.pipeline(transaction=False)
        for m, _ in members[::step][:SAMPLE_PER_SET]:
            pipe.hget(store.job_key(m), "body")
        est: list[list[Cost | None]] = [[] for _ in targets]
        kept: list[list[Cost | None]] = [[] for _ in targets]
        for raw in pipe.execute():
            if raw:
                e, k = costs(json.loads(raw), targets, cfg, typical_out)
                for i in range(len(targets)):
                    est[i].append(e[i])
                    kept[i].append(k[i])
        mean_est = tuple(_mean_cost(c) for c in est)
        mean_kept = tuple(_mean_cost(c) for c in kept)
        jobs += [SimJob(score, tuple(targets), mean_est, split_job_id(m)[0], mean_kept)
                 for m, score in members]
    return jobs


def _rolling_seed(r: Any, namespace: str, simulated: bool, cfg: Config,
                  limits: dict[str, LimitRule], now: float) -> dict[str, list[tuple[float, int]]]:
    """The charges still in every rolling window (the quota engine's sliding logs)."""
    wanted: list[tuple[str, str]] = []  # (rule key, redis key)
    seen: set[str] = set()
    for target in cfg.targets():
        prefix = key_prefix(namespace, simulated, target.provider)
        for spec in limit_specs(prefix, target.provider, target.model.id, target.limits()):
            rule_key = spec.base.replace(prefix, f"{target.provider}:", 1)
            if spec.rolling and rule_key in limits and rule_key not in seen:
                seen.add(rule_key)
                wanted.append((rule_key, spec.base))
    if not wanted:
        return {}
    pipe = r.pipeline(transaction=False)
    for rule_key, redis_key in wanted:
        win = limits[rule_key].window_s
        pipe.zrangebyscore(redis_key, f"({int((now - win) * US)}", "+inf", withscores=True)
    out: dict[str, list[tuple[float, int]]] = {}
    for (rule_key, _), entries in zip(wanted, pipe.execute(), strict=True):
        out[rule_key] = sorted((score / US, member_cost(m)) for m, score in entries
                               if not str(m).startswith("#"))
    return out


def world_from_redis(r: Any, namespace: str, cfg: Config, simulated: bool) -> World:
    """The limits and everything used, cooling down or in flight right now."""
    from workers.jobstore import JobStore
    from workers.quota.engine import QuotaEngine

    limits, targets = rules(cfg)
    engine = QuotaEngine(r, cfg, namespace=namespace, simulated=simulated)
    sec, usec = r.time()
    now = int(sec) + int(usec) / US
    used: dict[str, int] = {}
    for state in engine.snapshot():
        if state.per.rolling:
            continue
        suffix = ("p:" if state.model is None else f"m:{state.model}:") + \
            f"{state.unit.value}:{state.per.value}"
        used[_rule_key(state.provider, suffix)] = round(state.used * charge_scale(state.unit))
    latency = cfg.settings.forecast.latency_s
    store = JobStore(r, namespace)
    cool: dict[str, float] = {}
    busy: dict[str, list[float]] = {}
    pipe = r.pipeline(transaction=False)
    for key in targets:
        store.read_occupancy(pipe, key)
    counts = pipe.execute()
    reads = store.OCCUPANCY_READS
    for i, key in enumerate(targets):
        secs, _reason = engine.cooldown_of(cfg.target(key))
        if secs > 0:
            cool[key] = now + secs
        n = store.occupancy_of(counts[reads * i:reads * (i + 1)])[1]
        if n:
            busy[key] = [now + latency / 2] * n
    return World(now=now, limits=limits, targets=targets, latency_s=latency,
                 preference_delay_s=cfg.settings.routing.preference_delay_s,
                 rolling_seed=_rolling_seed(r, namespace, simulated, cfg, limits, now),
                 calendar_used=used, cooldown_until=cool, busy_until=busy)


def empty_world(cfg: Config, now: float | None = None) -> World:
    """No Redis to read: nothing used, nothing queued (the forecast says so)."""
    limits, targets = rules(cfg)
    return World(now=time.time() if now is None else now, limits=limits, targets=targets,
                 latency_s=cfg.settings.forecast.latency_s,
                 preference_delay_s=cfg.settings.routing.preference_delay_s)


def waiting_count(r: Any, namespace: str) -> int:
    """Jobs waiting in every set (one ZCARD each)."""
    from workers.jobstore import JobStore

    store = JobStore(r, namespace)
    pipe = r.pipeline(transaction=False)
    sigs = list(store.waitsets())
    for sig in sigs:
        pipe.zcard(store.wait_key(sig))
    return sum(int(n) for n in pipe.execute()) if sigs else 0


def next_seq(r: Any, namespace: str) -> int:
    """The sequence number ``create_batch`` will give the next batch."""
    return int(r.get(f"{namespace}:batchseq") or 0) + 1


def plan(cfg: Config, specs: Sequence[Any], simulated: bool, priority: str,
         r: Any = None, namespace: str = "dispatch") -> Forecast:
    """Forecast a batch about to be submitted (``r`` None: from an empty state)."""
    if r is None:
        return simulate(empty_world(cfg), planned_jobs(specs, cfg, priority, 1))
    world = world_from_redis(r, namespace, cfg, simulated)
    typical = typical_output(r, namespace, simulated)
    jobs = backlog(r, namespace, cfg, simulated, typical)
    jobs += planned_jobs(specs, cfg, priority, next_seq(r, namespace), typical)
    return simulate(world, jobs)


def etas(r: Any, namespace: str, cfg: Config) -> dict[str, float]:
    """When each batch with jobs still waiting should end (live and simulated backlogs
    are forecast apart: they use separate quota counters)."""
    out: dict[str, float] = {}
    for simulated in (False, True):
        mode = replace(cfg, simulate=simulated)  # simulated: every provider is enabled
        jobs = backlog(r, namespace, mode, simulated, typical_output(r, namespace, simulated))
        if jobs:
            out.update(simulate(world_from_redis(r, namespace, mode, simulated),
                                jobs).batch_finish)
    return out


def submit_line(cfg: Config, specs: Sequence[Any], simulated: bool,
                priority: str = "normal", deadline_s: float | None = None) -> str | None:
    """The one line ``submit`` and ``run`` print on stderr before queueing a batch, or None.

    With the batch's ``deadline_s``, jobs the forecast ends after it are said to expire.

    A forecast must never stop a submission: any failure (Redis, a bug) only drops the
    line, and is logged."""
    if not specs:
        return None
    try:
        from dispatcher.forecast import summary
        from workers.runtime import get_runtime

        rt = get_runtime()
        if len(specs) + waiting_count(rt.r, rt.namespace) > INLINE_MAX_JOBS:
            return "forecast: skipped for a queue this large (see `dispatch plan`)"
        f = plan(cfg, specs, simulated, priority, rt.r, rt.namespace)
        due = None if deadline_s is None else f.now + deadline_s
        line = "forecast: " + summary(f, due)
        if due is not None and not f.meets(due):
            line += f" — {f.jobs - f.done_by(due):,} jobs would expire at the deadline"
        return line
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("no forecast: %s", exc)
        return None


def status_etas(rt: Any) -> dict[str, float]:
    """When each unfinished batch should end, for ``dispatch status`` ({} on any failure:
    the status must show even when the forecast cannot be made)."""
    try:
        if waiting_count(rt.r, rt.namespace) > INLINE_MAX_JOBS:
            return {}
        return etas(rt.r, rt.namespace, rt.config)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("no forecast: %s", exc)
        return {}
