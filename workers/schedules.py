"""Cron automation: ``schedules.yaml`` entries run by Celery beat with RedBeat.

Why RedBeat: exactly one beat may send ticks, or every tick is dispatched twice. RedBeat
keeps the schedule and a lock in Redis; a second beat waits on the lock as a standby and
takes over when the active one stops renewing it (``DISPATCH_BEAT_LOCK_TIMEOUT``, 30 s).

Each tick sends ``dispatch.schedule(name)`` to the routers (plus the tick's scheduled time,
computed from the run state shared in Redis). The task validates the entry's batch exactly
like any submitted batch and submits it, at most once per tick: ``SET NX`` on
``{ns}:tick:{name}:{tick}`` is a second guard should two beats ever both send.

Time zones: Celery 5.7's ``crontab`` matches its fields in ``self.tz`` (both ``now`` and
``last_run_at`` are converted to it), which is the *app's* time zone; a ``nowfun`` alone does
not change that frame. :class:`ZonedCrontab` overrides ``tz`` per entry, and
:class:`ZonedEntry` stores the zone in Redis, since RedBeat's JSON encoding of a
``crontab`` drops it.

    $ REDIS_URL=redis://127.0.0.1:6379/0 dispatch beat
    $ celery -A workers.celery_app beat      # same scheduler (``beat_scheduler`` in the app)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from celery import Celery
from celery.schedules import BaseSchedule, crontab, schedule
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder
from redbeat.schedulers import RedBeatScheduler, RedBeatSchedulerEntry, get_redis

from workers.celery_app import app, tag_queue

log = logging.getLogger("dispatch.schedules")

TASK_NAME = "dispatch.schedule"


def schedule_queue() -> str:
    """Where ticks go: the ``fast`` tag queue of this deployment's namespace.

    Ticks are routing work: every router consumes every tag queue, and ``fast`` always
    exists, so no deployment needs an extra queue for them.
    """
    return tag_queue("fast")


EVERY_ENV = "DISPATCH_BEAT_EVERY_S"
"""Testing/diagnostics only: run every enabled schedule every N seconds instead of its cron."""
SIMULATE_ENV = "DISPATCH_BEAT_SIMULATE"
"""``1``: scheduled jobs go to the simulator (``dispatch beat --simulate`` sets it)."""

DEFAULT_DEADLINE_S = 86400.0
MIN_DEADLINE_S = 60.0


# -- schedules with a time zone ---------------------------------------------------------


class ZonedCrontab(crontab):
    """A ``crontab`` whose fields are read in its own time zone, not the app's."""

    def __init__(self, *args: Any, timezone: str = "UTC", **kwargs: Any) -> None:
        self.zone = timezone
        super().__init__(*args, **kwargs)

    @property
    def tz(self) -> tzinfo:  # type: ignore[override]
        return ZoneInfo(self.zone)

    def __reduce__(self) -> tuple[Any, ...]:
        cls, args, state = super().__reduce__()
        return cls, args, {**state, "timezone": self.zone}

    def __setstate__(self, state: Any) -> None:
        state = dict(state)
        self.zone = state.pop("timezone", "UTC")
        super().__setstate__(state)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]} {self.zone}>"

    def __eq__(self, other: Any) -> bool:
        same = super().__eq__(other)
        if same is NotImplemented:
            return same
        return bool(same) and getattr(other, "zone", "UTC") == self.zone


def build_schedule(cron: str, timezone: str = "UTC", *, nowfun: Any = None,
                   app_: Celery | None = None) -> BaseSchedule:
    """The beat schedule for a 5-field cron expression in ``timezone``.

    ``DISPATCH_BEAT_EVERY_S`` replaces it with a plain interval (tests, diagnostics).
    """
    every = os.environ.get(EVERY_ENV)
    if every:
        return schedule(run_every=float(every), nowfun=nowfun, app=app_)
    minute, hour, dom, month, dow = cron.split()
    return ZonedCrontab(minute, hour, day_of_week=dow, day_of_month=dom, month_of_year=month,
                        timezone=timezone, nowfun=nowfun, app=app_)


def next_run(cron: str, timezone: str, after: datetime) -> datetime:
    """The first time ``cron`` fires strictly after ``after`` (UTC, aware)."""
    after = after.astimezone(UTC)
    sched = ZonedCrontab(*_fields(cron), timezone=timezone, nowfun=lambda: after)
    return (after + sched.remaining_estimate(after)).astimezone(UTC)


def _fields(cron: str) -> tuple[str, str, str, str, str]:
    minute, hour, dom, month, dow = cron.split()
    return minute, hour, dow, dom, month  # crontab's positional order


def period_s(cron: str, timezone: str, now: datetime | None = None) -> float:
    """Seconds between the next two ticks (the override's interval when it is set)."""
    every = os.environ.get(EVERY_ENV)
    if every:
        return float(every)
    first = next_run(cron, timezone, now or datetime.now(UTC))
    return (next_run(cron, timezone, first) - first).total_seconds()


# -- RedBeat plumbing -----------------------------------------------------------------


class _Encoder(RedBeatJSONEncoder):
    def default(self, obj: Any) -> Any:
        out = super().default(obj)
        if isinstance(obj, ZonedCrontab):
            out["zone"] = obj.zone
        return out


class _Decoder(RedBeatJSONDecoder):
    def dict_to_object(self, d: dict[str, Any]) -> Any:
        if d.get("__type__") == "crontab" and "zone" in d:
            zone = d.pop("zone")
            d.pop("__type__")
            return ZonedCrontab(**d, timezone=zone)
        return super().dict_to_object(d)


class ZonedEntry(RedBeatSchedulerEntry):
    """A RedBeat entry that keeps its crontab's time zone in Redis."""

    @staticmethod
    def decode_definition(definition: str) -> dict[str, Any]:
        return json.loads(definition, cls=_Decoder)

    @staticmethod
    def load_definition(key: str, app: Celery | None = None,
                        definition: str | None = None) -> dict[str, Any]:
        if definition is None:
            definition = get_redis(app).hget(key, "definition")
        if not definition:
            raise KeyError(key)
        return ZonedEntry.decode_definition(definition)

    def save(self) -> ZonedEntry:
        definition = {
            "name": self.name, "task": self.task, "args": self.args, "kwargs": self.kwargs,
            "options": self.options, "schedule": self.schedule, "enabled": self.enabled,
        }
        meta = {"last_run_at": self.last_run_at}
        with get_redis(self.app).pipeline() as pipe:
            pipe.hset(self.key, "definition", json.dumps(definition, cls=_Encoder))
            pipe.hsetnx(self.key, "meta", json.dumps(meta, cls=RedBeatJSONEncoder))
            pipe.zadd(self.app.redbeat_conf.schedule_key, {self.key: self.score})
            pipe.execute()
        return self


def tick_of(entry: RedBeatSchedulerEntry, now: datetime | None = None) -> int:
    """The UNIX second this send belongs to: the first fire after the shared last run.

    Two beats reading the same run state in Redis compute the same tick, so the task's
    ``SET NX`` catches a double send; a never-run entry uses the current minute.
    """
    now = now or datetime.now(UTC)
    if entry.last_run_at is None:
        return int(now.timestamp()) // 60 * 60
    remaining = entry.schedule.remaining_estimate(entry.last_run_at)
    return round((now + remaining).timestamp())


class DispatchScheduler(RedBeatScheduler):
    """RedBeat with time-zoned entries, a config sync at start, and a tick id per send."""

    Entry = ZonedEntry

    def setup_schedule(self) -> None:
        super().setup_schedule()
        from dispatcher.config import load_config

        cfg = load_config(os.environ.get("DISPATCH_CONFIG"))
        sync_schedules(cfg, self.app, simulated=os.environ.get(SIMULATE_ENV) == "1")

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True,
                    **kwargs: Any) -> Any:
        if entry.task != TASK_NAME:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        tick = tick_of(entry)
        entry.kwargs = {**(entry.kwargs or {}), "tick": tick}
        log.info("schedule %s: sending tick %d", entry.name, tick)
        result = super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        # Only now is the tick on the broker: a beat stopped between the two lines sent none.
        log.info("schedule %s: sent tick %d", entry.name, tick)
        return result


def _entry_options(cron: str, timezone: str) -> dict[str, Any]:
    # A tick that no router picked up before the next one is dropped, not piled up.
    return {"queue": schedule_queue(), "expires": max(MIN_DEADLINE_S, period_s(cron, timezone))}


def sync_schedules(cfg: Any, app_: Celery | None = None, *,
                   simulated: bool = False) -> dict[str, list[str]]:
    """Make RedBeat's entries match ``schedules.yaml``: create, update, delete.

    Only entries of ``dispatch.schedule`` are touched; a changed entry keeps its last run,
    so changing a schedule never fires it at once. Returns the names by action.
    """
    app_ = app_ or app
    r = get_redis(app_)
    conf = app_.redbeat_conf
    wanted = {name: s for name, s in cfg.schedules.items() if s.enabled}
    out: dict[str, list[str]] = {"created": [], "updated": [], "deleted": []}
    for key in r.zrange(conf.schedule_key, 0, -1):
        try:
            existing = ZonedEntry.from_key(key, app=app_)
        except KeyError:
            continue
        if existing.task == TASK_NAME and existing.name not in wanted:
            existing.delete()
            out["deleted"].append(existing.name)
    now = datetime.now(UTC)
    for name, s in sorted(wanted.items()):
        entry = ZonedEntry(
            name=name, task=TASK_NAME, schedule=build_schedule(s.cron, s.timezone, app_=app_),
            args=[name], kwargs={"simulated": simulated} if simulated else {},
            options=_entry_options(s.cron, s.timezone), app=app_,
        )
        try:
            entry.last_run_at = ZonedEntry.from_key(entry.key, app=app_).last_run_at or now
            out["updated"].append(name)
        except KeyError:
            # RedBeat treats a never-run entry as due at once; a new cron entry must wait
            # for its first tick instead.
            entry.last_run_at = now
            out["created"].append(name)
        entry.save()
    log.info("schedules synced: %s", {k: v for k, v in out.items() if v})
    return out


# -- the task ---------------------------------------------------------------------------


def schedule_source(cfg: Any, name: str) -> str:
    """Where an entry's jobs come from, for messages: the batch file or its inline list."""
    s = cfg.schedules[name]
    if s.batch is not None:
        path = Path(s.batch)
        return str(path if path.is_absolute() else Path(cfg.directory) / path)
    return f"{Path(cfg.directory) / 'schedules.yaml'}: schedules.{name}.jobs"


def schedule_jobs(cfg: Any, name: str) -> list[Any]:
    """The entry's validated jobs, or ``BatchInvalid`` listing every bad line.

    A batch file (relative to the config directory unless absolute) goes through
    ``parse_batch`` like any batch; inline jobs go through it too, as lines, so duplicate
    ``custom_id`` and every other check apply. Inline jobs without ``custom_id`` get
    ``{name}-{i}``; an inline job's "line" is its 1-based position in ``jobs``.
    """
    from dispatcher.batchfile import parse_batch

    s = cfg.schedules[name]
    if s.batch is not None:
        return parse_batch(schedule_source(cfg, name), cfg)
    lines = []
    for i, job in enumerate(s.jobs or []):
        obj = dict(job) if isinstance(job, dict) else job
        if isinstance(obj, dict):
            obj.setdefault("custom_id", f"{name}-{i}")
        lines.append(json.dumps(obj, default=str))  # a YAML date: the text as written
    return parse_batch(lines, cfg)


def tick_batch_id(ns: str, name: str, tick: int) -> str:
    """The batch id of one schedule tick: the same for every run of the tick, so a run that
    died after submitting (before recording the tick) and its redelivery make ONE batch."""
    digest = hashlib.sha1(f"{ns}\0{name}\0{tick}".encode()).hexdigest()[:20]
    return f"batch_{digest}"


def _status_key(ns: str, name: str) -> str:
    return f"{ns}:schedule:{name}"


@app.task(name=TASK_NAME, bind=True, ignore_result=False)
def run_schedule(self: Any, name: str, tick: int | None = None,
                 simulated: bool = False) -> dict[str, Any]:
    """Validate and submit one schedule's batch, at most once per tick."""
    from dispatcher.batches import submit
    from dispatcher.batchfile import BatchInvalid, format_problems
    from dispatcher.config import ConfigError, load_config
    from workers.runtime import get_runtime

    rt = get_runtime()
    status_key = _status_key(rt.namespace, name)
    try:
        cfg = load_config(os.environ.get("DISPATCH_CONFIG"), simulate=simulated)
    except ConfigError as exc:
        log.error("schedule %s: invalid configuration, nothing submitted:\n%s", name,
                  "\n".join(exc.problems))
        rt.r.hset(status_key, mapping={"last_status": "config_invalid",
                                       "last_error": "\n".join(exc.problems[:10])})
        return {"schedule": name, "status": "config_invalid"}
    s = cfg.schedules.get(name)
    if s is None or not s.enabled:
        log.warning("schedule %s: not in schedules.yaml or disabled here; skipped", name)
        return {"schedule": name, "status": "skipped"}

    period = period_s(s.cron, s.timezone)
    tick_key = f"{rt.namespace}:tick:{name}:{tick}" if tick is not None else None
    if tick_key is not None:
        ttl = int(min(2 * 86400, max(600, 2 * period)))
        task_id = self.request.id or "local"
        if not rt.r.set(tick_key, f"pending:{task_id}", nx=True, ex=ttl):
            held = rt.r.get(tick_key) or ""
            # A redelivery of this very message whose first run died before submitting
            # may go on; anything else already handled this tick.
            if held != f"pending:{task_id}":
                log.info("schedule %s: tick %s already dispatched (%s); skipped", name, tick,
                         held)
                return {"schedule": name, "tick": tick, "status": "duplicate", "held": held}

    when = datetime.fromtimestamp(tick, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if tick else "now"
    source = schedule_source(cfg, name)
    try:
        specs = schedule_jobs(cfg, name)
    except BatchInvalid as exc:
        log.error("schedule %s (tick %s): %s: invalid batch, nothing was submitted:\n%s",
                  name, when, source, format_problems(exc.problems))
        if tick_key:
            rt.r.set(tick_key, "invalid", keepttl=True)
        rt.r.hset(status_key, mapping={"last_tick": when, "last_status": "invalid",
                                       "last_error": format_problems(exc.problems, 10)})
        return {"schedule": name, "tick": tick, "status": "invalid",
                "problems": [str(p) for p in exc.problems[:50]]}
    except OSError as exc:
        log.error("schedule %s (tick %s): cannot read its batch: %s; nothing submitted",
                  name, when, exc)
        if tick_key:
            rt.r.set(tick_key, "unreadable", keepttl=True)
        rt.r.hset(status_key, mapping={"last_tick": when, "last_status": "unreadable",
                                       "last_error": str(exc)})
        return {"schedule": name, "tick": tick, "status": "unreadable"}

    deadline = min(DEFAULT_DEADLINE_S, max(MIN_DEADLINE_S, period))
    batch = submit(specs, simulated=simulated, deadline_s=deadline,
                   name=f"schedule:{name}@{when}", priority=s.priority,
                   batch_id=tick_batch_id(rt.namespace, name, tick) if tick is not None else None)
    if tick_key:
        rt.r.set(tick_key, batch, keepttl=True)
    rt.r.hset(status_key, mapping={"last_tick": when, "last_status": "submitted",
                                   "last_batch": batch, "last_error": ""})
    log.info("schedule %s (tick %s): %s: batch %s, %d jobs%s", name, when, source, batch,
             len(specs), " (simulated)" if simulated else "")
    return {"schedule": name, "tick": tick, "status": "submitted", "batch": batch,
            "jobs": len(specs)}

