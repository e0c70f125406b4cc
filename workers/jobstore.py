"""The Redis job store: job bodies, batches, waiting sets and results.

Celery messages carry only ids; everything a job is lives here, so Flower and the broker
never see a prompt or a key, and a redelivered message finds the job's true state.

Layout (``ns`` is the deployment's namespace; a batch's keys share a hash tag):

- ``ns:b:{batch}``            hash: total, completed, failed, status, created, deadline, ...
- ``ns:j:{batch}:N``          hash: the N-th job (0-based input order): body, targets, state, ...
- ``ns:w:SIG``                zset: jobs waiting for one list of targets, by fair score
- ``ns:waitsets``             hash: SIG -> {"tag", "targets"}
- ``ns:wake``                 list: signatures whose waiting set may move now
- ``ns:queued:T`` / ``ns:calling:T``  zsets: jobs handed to target T's provider queue / in a call
- ``ns:gwcalling:T``          zset: gateway calls on T in progress, scored by lease expiry
                              (they hold T's concurrency slots too: workers/slots.py)
- ``ns:lease:ID``             a live worker process's heartbeat (workers/liveness.py); a
                              job's ``holder`` field names the lease of whoever holds it
- ``ns:deadlines``            zset: batches by the time their deadline is (next) enforced

    >>> store = JobStore(redis_client(), "dispatch")           # doctest: +SKIP
    >>> batch_id = store.create_batch(specs, simulated=True, deadline_s=3600)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import NoScriptError

from workers import wire

log = logging.getLogger("dispatch.jobstore")

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})
_LUA = Path(__file__).with_name("lua")


def waitset_sig(tag: str, targets: list[str]) -> str:
    """A stable name for "jobs of this tag that these targets, in this order, may take"."""
    blob = json.dumps([tag, targets], separators=(",", ":")).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def fair_score(index: int, batch_seq: int, share: float = 1.0) -> float:
    """Interleave batches: the k-th job of every batch comes before the (k+1)-th of any.

    A one-job submission or a small cron batch is never stuck behind a 100,000-job batch
    of the same tag; within a batch, input order is kept. ``share`` (in (0, 1], from the
    batch's priority: :mod:`workers.priority`) spaces a batch's jobs by ``1 / share``, so a
    high-priority batch gets jobs in proportion to its weight and a low one still its share.
    """
    return (index + 1) * 1000.0 / share + (batch_seq % 1000)


@dataclass
class Job:
    id: str
    batch: str
    index: int
    custom_id: str
    tag: str
    body: dict[str, Any]
    targets: list[str]
    excluded: list[str] = field(default_factory=list)
    state: str = "waiting"
    attempts: int = 0
    score: float = 0.0
    simulated: bool = False
    deadline: float = 0.0
    sig: str = ""
    result: dict[str, Any] | None = None

    @property
    def remaining_targets(self) -> list[str]:
        return [t for t in self.targets if t not in self.excluded]

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL


def _pairs(flat: list[str]) -> dict[str, str]:
    """A hash as Lua returns HGETALL (field, value, field, value ...) -> dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def job_id(batch: str, index: int) -> str:
    return f"{batch}:{index}"


def split_job_id(jid: str) -> tuple[str, int]:
    batch, _, index = jid.rpartition(":")
    return batch, int(index)


class JobStore:
    """All job and batch state in Redis; every multi-key change is one Lua script."""

    def __init__(self, r: redis.Redis, namespace: str = "dispatch", retention_s: float = 7 * 86400):
        self.r = r
        self.ns = namespace
        self.retention_s = int(retention_s)
        prelude = (_LUA / "prelude.lua").read_text()

        def script(name: str) -> Any:
            return r.register_script(prelude + (_LUA / f"{name}.lua").read_text())

        self._finish = script("finish")
        self._park = script("park")
        self._handout = script("handout")
        self._next = script("next")
        self._start = script("start")
        self._heads = script("heads")
        self._sweep = script("sweep")
        self._crash = script("crash")
        self._release_script = script("release")
        self._gwtake = script("gwtake")
        self._gwkeep = script("gwkeep")
        self._expire = script("expire")
        self._constants: dict[str, tuple[bool, float]] = {}
        self._orphans: list[tuple[Job, str, str]] = []
        self._orphans_lock = threading.Lock()

    # -- keys ---------------------------------------------------------------
    def batch_key(self, batch: str) -> str:
        return f"{self.ns}:b:{{{batch}}}"

    def job_key(self, jid: str) -> str:
        batch, index = split_job_id(jid)
        return f"{self.ns}:j:{{{batch}}}:{index}"

    def wait_key(self, sig: str) -> str:
        return f"{self.ns}:w:{sig}"

    def done_key(self, batch: str) -> str:
        return f"{self.ns}:done:{{{batch}}}"

    @property
    def wake_key(self) -> str:
        return f"{self.ns}:wake"

    @property
    def deadlines_key(self) -> str:
        return f"{self.ns}:deadlines"

    @property
    def waitsets_key(self) -> str:
        return f"{self.ns}:waitsets"

    def queued_key(self, target: str) -> str:
        return f"{self.ns}:queued:{target}"

    def calling_key(self, target: str) -> str:
        return f"{self.ns}:calling:{target}"

    def gwcalling_key(self, target: str) -> str:
        """The concurrency slots gateway calls hold on ``target`` (see workers/slots.py)."""
        return f"{self.ns}:gwcalling:{target}"

    OCCUPANCY_READS = 4
    """Replies :meth:`read_occupancy` queues per target, for :meth:`occupancy_of`."""

    def read_occupancy(self, pipe: Any, target: str) -> None:
        """Queue the reads of ``target``'s occupancy on ``pipe``. A started job stays in
        ``queued:T`` until its release and is in ``calling:T`` too: the intersection is
        counted once (as ``occupancy()`` in the Lua prelude does); live gateway slots
        count as calls."""
        queued, calling = self.queued_key(target), self.calling_key(target)
        pipe.zcard(queued)
        pipe.zcard(calling)
        pipe.zintercard(2, [queued, calling])
        pipe.zcount(self.gwcalling_key(target), time.time(), "+inf")

    @staticmethod
    def occupancy_of(replies: list[Any]) -> tuple[int, int]:
        """``(handed out and not released, slots in use)`` from one target's
        :meth:`read_occupancy` replies: a started job counts once toward the slots.

            >>> JobStore.occupancy_of([3, 2, 2, 1])   # 3 handed out, 2 started; 1 gateway
            (3, 4)
        """
        queued, calling, both, gateway = (int(x) for x in replies)
        return queued, queued + calling - both + gateway

    # -- submission -----------------------------------------------------------
    def create_batch(
        self,
        jobs: Iterable[Any],
        *,
        simulated: bool,
        deadline_s: float,
        name: str = "",
        chunk: int = 2000,
        batch_id: str | None = None,
        priority: str = "normal",
        weights: Any = None,
    ) -> tuple[str, dict[str, tuple[str, list[str]]]]:
        """Store a validated batch (``JobSpec``-like objects) and queue every job.

        ``priority`` (``high``, ``normal``, ``low``) with ``weights`` (settings.yaml
        ``priorities``) sets the batch's share of the waiting sets (:func:`fair_score`).

        Returns the batch id and the waiting sets that received jobs (signature -> tag and
        targets). With ``batch_id`` (a cron tick's, derived from schedule and tick) the
        batch is created at most once: all of it in one transaction, only if no batch of
        that id exists (``WATCH``); otherwise nothing is written and no set is returned.
        """
        from workers.priority import share as priority_share

        share = priority_share(priority, weights)
        batch = batch_id or "batch_" + uuid.uuid4().hex[:20]
        pipe = self.r.pipeline(transaction=batch_id is not None)
        if batch_id is not None:
            pipe.watch(self.batch_key(batch))
            if pipe.exists(self.batch_key(batch)):
                pipe.reset()
                return batch, {}
            pipe.multi()
            chunk = 1 << 62  # one transaction: all of the batch or none of it
        seq = int(self.r.incr(f"{self.ns}:batchseq"))
        now = time.time()
        deadline = now + deadline_s
        self._remember(batch, "1" if simulated else "0", deadline)
        ttl = self.retention_s + int(deadline_s)
        # The batch's constants first (a pipeline keeps its order): a router may pick up its
        # first jobs before the last chunk is written; ``total`` comes last, so the batch
        # cannot look finished early.
        pipe.hset(self.batch_key(batch), mapping={
            "completed": 0, "failed": 0, "status": "in_progress", "created": now,
            "deadline": deadline, "simulated": int(simulated), "name": name,
            "priority": priority,
        })
        sigs: dict[str, tuple[str, list[str]]] = {}
        waiting: dict[str, dict[str, float]] = {}
        total = 0
        for i, spec in enumerate(jobs):
            targets = list(spec.targets)
            sig = waitset_sig(spec.tag, targets)
            sigs.setdefault(sig, (spec.tag, targets))
            score = fair_score(i, seq, share)
            key = f"{self.ns}:j:{{{batch}}}:{i}"
            # What every job of the batch shares (simulated, deadline) lives in the batch.
            pipe.hset(key, mapping={
                "custom_id": spec.custom_id,
                "tag": spec.tag,
                "body": json.dumps(spec.body, separators=(",", ":")),
                "targets": json.dumps(targets),
                "state": "waiting",
                "score": score,
                "sig": sig,
            })
            pipe.expire(key, ttl)
            waiting.setdefault(sig, {})[f"{batch}:{i}"] = score
            total += 1
            if total % chunk == 0:
                self._queue(pipe, waiting)
                pipe.execute()
        self._queue(pipe, waiting)
        for sig, (tag, targets) in sigs.items():
            pipe.hset(self.waitsets_key, sig, json.dumps({"tag": tag, "targets": targets}))
        pipe.hset(self.batch_key(batch), mapping={
            "total": total, "tags": json.dumps(sorted({t for t, _ in sigs.values()}))})
        pipe.expire(self.batch_key(batch), ttl)
        pipe.zadd(f"{self.ns}:batches", {batch: now})
        pipe.zadd(self.deadlines_key, {batch: deadline})
        pipe.hmget(self.batch_key(batch), "completed", "failed")
        try:
            completed, failed = pipe.execute()[-1]
        except redis.WatchError:  # another run of the same tick created it meanwhile
            return batch, {}
        if int(completed or 0) + int(failed or 0) >= total:  # it all ended before ``total``
            self.r.hset(self.batch_key(batch), mapping={"status": "completed", "ended": now})
        return batch, sigs

    def _queue(self, pipe: Any, waiting: dict[str, dict[str, float]]) -> None:
        for sig, members in waiting.items():
            if members:
                pipe.zadd(self.wait_key(sig), members)
        waiting.clear()

    # -- reading ----------------------------------------------------------------
    def load(self, jid: str) -> Job | None:
        return self._job(jid, self.r.hgetall(self.job_key(jid)))

    def heads(self, sig: str, count: int) -> list[tuple[str, Job | None]]:
        """The first ``count`` jobs waiting in a set, loaded, in one round trip."""
        flat = self._heads(keys=[self.wait_key(sig)], args=[count, self.ns])
        out: list[tuple[str, Job | None]] = []
        i = 0
        while i < len(flat):
            jid, n = flat[i], int(flat[i + 1])
            out.append((jid, self._job(jid, _pairs(flat[i + 2:i + 2 + n]))))
            i += 2 + n
        return out

    def start(self, jid: str, target: str, holder: str = "",
              ticket: int | str | None = None) -> tuple[Job | None, str | None, bool]:
        """A call task starts: the job, its batch's status and whether this task claimed
        it for ``target`` (only the message of the job's latest hand-out does, see
        ``start.lua``), in one round trip."""
        batch = split_job_id(jid)[0]
        status, simulated, deadline, claimed, *flat = self._start(
            keys=[self.job_key(jid), self.batch_key(batch), self.calling_key(target)],
            args=[jid, target, holder, "" if ticket is None else str(ticket)])
        self._remember(batch, simulated, deadline)
        return self._job(jid, _pairs(flat)), status or None, claimed == "1"

    def _job(self, jid: str, h: dict[str, str]) -> Job | None:
        if not h:
            return None
        batch, index = split_job_id(jid)
        simulated, deadline = self._batch_constants(batch)
        return Job(
            id=jid,
            batch=batch,
            index=index,
            custom_id=h["custom_id"],
            tag=h["tag"],
            body=json.loads(h["body"]),
            targets=json.loads(h["targets"]),
            excluded=json.loads(h.get("excluded") or "[]"),
            state=h["state"],
            attempts=int(h.get("attempts") or 0),
            score=float(h.get("score") or 0),
            simulated=simulated,
            deadline=deadline,
            sig=h.get("sig", ""),
            result=json.loads(h["result"]) if h.get("result") else None,
        )

    def _batch_constants(self, batch: str) -> tuple[bool, float]:
        """(simulated, deadline) of a batch: set at creation, never changed, so cached."""
        known = self._constants.get(batch)
        if known is None:
            simulated, deadline = self.r.hmget(self.batch_key(batch), "simulated", "deadline")
            known = self._remember(batch, simulated, deadline)
        return known

    def _remember(self, batch: str, simulated: str | None,
                  deadline: str | float | None) -> tuple[bool, float]:
        known = (simulated == "1", float(deadline or 0))
        if deadline:
            if len(self._constants) > 10_000:
                self._constants.clear()
            self._constants[batch] = known
        return known

    def batch_status(self, batch: str) -> str | None:
        return self.r.hget(self.batch_key(batch), "status")

    def batch(self, batch: str) -> dict[str, Any] | None:
        h = self.r.hgetall(self.batch_key(batch))
        if not h:
            return None
        out: dict[str, Any] = {"id": batch, **h}
        for k in ("total", "completed", "failed"):
            out[k] = int(h.get(k) or 0)
        out["providers"] = {k[2:]: int(v) for k, v in h.items() if k.startswith("p:")}
        return out

    def batches(self, limit: int = 20) -> list[str]:
        return list(self.r.zrevrange(f"{self.ns}:batches", 0, limit - 1))

    def results(self, batch: str) -> Iterator[tuple[int, str, str, dict[str, Any] | None]]:
        """(index, custom_id, state, result) for every job, in input order."""
        total = int(self.r.hget(self.batch_key(batch), "total") or 0)
        step = 500
        for start in range(0, total, step):
            pipe = self.r.pipeline(transaction=False)
            for i in range(start, min(total, start + step)):
                pipe.hmget(self.job_key(job_id(batch, i)), "custom_id", "state", "result")
            for i, (cid, state, result) in enumerate(pipe.execute(), start):
                yield i, cid or "", state or "missing", json.loads(result) if result else None

    # -- transitions ----------------------------------------------------------------
    def mark(self, jid: str, **fields: Any) -> None:
        self.r.hset(self.job_key(jid), mapping=fields)

    def release(self, jid: str, target: str, sigs: list[str], holder: str = "") -> None:
        """A call task is over: its target has room again (unless the job was swept and
        someone else holds it now); wake the sets it may serve."""
        self._release_script(keys=[self.queued_key(target), self.calling_key(target),
                                   self.wake_key, self.job_key(jid)],
                             args=[jid, holder, *sigs])

    # -- gateway calls' concurrency slots (workers/slots.py) ------------------------
    def gw_take_call(self, target: str, member: str, concurrency: int,
                     lease_s: float) -> tuple[Any, list[str], list[Any]]:
        """The script call taking a gateway slot on ``target`` (reply 1: taken, 0: full),
        as ``(script, keys, args)``: run alone by :meth:`gw_take`, or packed into the quota
        reservation's round trip (``QuotaEngine.reserve_along``)."""
        return (self._gwtake,
                [self.gwcalling_key(target), self.queued_key(target), self.calling_key(target)],
                [member, concurrency, max(1, int(lease_s * 1000))])

    def gw_take(self, target: str, member: str, concurrency: int, lease_s: float) -> bool:
        script, keys, args = self.gw_take_call(target, member, concurrency, lease_s)
        return int(script(keys=keys, args=args)) == 1

    def gw_keep(self, slots: list[tuple[str, str, float]]) -> int:
        """Extend the leases of gateway slots still in a call: ``(target, member, lease_s)``
        each, one round trip. Returns how many were still there."""
        if not slots:
            return 0
        ops = [lambda pipe, t=t, m=m, ls=ls: self._script_in(
            pipe, self._gwkeep, [self.gwcalling_key(t)], [m, max(1, int(ls * 1000))])
            for t, m, ls in slots]
        replies = self._run_ops(ops)
        if any(isinstance(x, NoScriptError) for got in replies for x in got):
            self.r.script_load(self._gwkeep.script)
            replies = self._run_ops(ops)  # extending twice is harmless
        return sum(1 for got in replies for x in got if x == 1)

    def gw_free(self, slots: list[tuple[str, str]], sigs: Iterable[str]) -> None:
        """Give gateway slots back (``(target, member)`` each) and wake the waiting sets
        ``sigs`` (those the freed targets may serve), as a call task's release does, so a
        batch job takes the slot at once; one round trip, packed by hand (it runs beside
        the gateway's answers: :mod:`workers.wire`)."""
        commands: list[tuple[Any, ...]] = [("ZREM", self.gwcalling_key(target), member)
                                           for target, member in slots]
        sigs = list(dict.fromkeys(sigs))
        if sigs:
            commands += [("RPUSH", self.wake_key, *sigs), ("LTRIM", self.wake_key, -1000, -1)]
        wire.call_many(self.r, commands, raise_on_error=True)

    def finish(self, job: Job, state: str, result: dict[str, Any], provider: str = "") -> bool:
        """End the job exactly once; a second finish (a redelivered message) changes nothing."""
        return int(self._pipelined(
            [lambda pipe: self._finish_in(pipe, job, state, result, provider)], primary=1)[0]) == 1

    def crashed(self, job: Job, reason: str, max_crashes: int, holder: str = "") -> int:
        """A call task failed with ``job`` unfinished (``reason``, already redacted): it
        waits again (1) or, after ``max_crashes`` crashes, ends ``failed`` with
        ``internal_error`` (2); 0 if it had ended meanwhile or ``holder`` no longer holds
        it (swept and claimed by another worker)."""
        return int(self._crash(keys=[self.job_key(job.id), self.wake_key],
                               args=[self.ns, job.id, reason[:1000], max_crashes,
                                     self.retention_s, holder]))

    def finish_and_next(self, job: Job, result: dict[str, Any], provider: str, target: str,
                        first_sigs: list[str], wake_sigs: list[str],
                        take: bool, also: Callable[[Any], None] | None = None,
                        holder: str = "") -> tuple[Job | None, str | None]:
        """Complete ``job`` and, with ``take``, go on with ``target``'s backlog in one trip.

        Returns the next job (already running on ``target``, its slot carried over) and its
        batch's status, or ``(None, None)``: then the slot was given back and the sets
        ``target`` may serve were woken, as :meth:`release` does. ``also`` queues more
        commands in the same round trip (the call's usage); their failure is only logged.
        """
        ops = [lambda pipe: self._finish_in(pipe, job, "completed", result, provider),
               lambda pipe: self._script_in(pipe, self._next, *self._next_args(
                   job.id, target, first_sigs, wake_sigs, take, holder))]
        if also:
            ops.append(also)
        return self._taken(self._pipelined(ops, primary=2)[1])

    def next_job(self, prev: str, target: str, first_sigs: list[str], wake_sigs: list[str],
                 take: bool = True, holder: str = "") -> tuple[Job | None, str | None]:
        """Like :meth:`finish_and_next` for a job that was already ended."""
        keys, args = self._next_args(prev, target, first_sigs, wake_sigs, take, holder)
        return self._taken(self._next(keys=keys, args=args))

    def _next_args(self, prev: str, target: str, first_sigs: list[str], wake_sigs: list[str],
                   take: bool, holder: str) -> tuple[list[str], list[str]]:
        keys = [self.calling_key(target), self.queued_key(target), self.wake_key,
                *(self.wait_key(s) for s in first_sigs)]
        return keys, [prev, target, self.ns, "1" if take and first_sigs else "0", holder,
                      *wake_sigs]

    def _finish_in(self, pipe: Any, job: Job, state: str, result: dict[str, Any],
                   provider: str) -> None:
        self._script_in(pipe, self._finish, [self.job_key(job.id), self.batch_key(job.batch)],
                        [state, json.dumps(result, separators=(",", ":")), provider,
                         self.retention_s, self.ns, job.attempts, job.id])

    @staticmethod
    def _script_in(pipe: Any, script: Any, keys: list[str], args: list[Any]) -> None:
        pipe.evalsha(script.sha, len(keys), *keys, *args)

    def _pipelined(self, ops: list[Callable[[Any], None]], primary: int) -> list[Any]:
        """Run ``ops`` (each queues commands on a pipeline) in one round trip; returns the
        replies of the first ``primary`` ops, scripts of one command each, which raise on
        error; errors of the other ops are only logged.

        Scripts go in as plain EVALSHA: a registered script in a redis-py pipeline costs a
        SCRIPT EXISTS round trip on every execute. A script Redis does not know (a restart
        emptied its cache) did nothing: it is loaded and only that op runs again, so no
        command ever runs twice.
        """
        replies = self._run_ops(ops)
        lost = [i for i, got in enumerate(replies)
                if any(isinstance(x, NoScriptError) for x in got)]
        if lost:
            for script in (self._finish, self._next):
                self.r.script_load(script.script)  # same sha: the op closures still fit
            for i, got in zip(lost, self._run_ops([ops[i] for i in lost]), strict=True):
                replies[i] = got
        out = [got[0] for got in replies[:primary]]
        for reply in out:
            if isinstance(reply, Exception):
                raise reply
        for got in replies[primary:]:
            for reply in got:
                if isinstance(reply, Exception):
                    log.warning("job store: a secondary write failed: %s", reply)
        return out

    def _run_ops(self, ops: list[Callable[[Any], None]]) -> list[list[Any]]:
        pipe = self.r.pipeline(transaction=False)
        bounds = []
        for op in ops:
            start = len(pipe)
            op(pipe)
            bounds.append((start, len(pipe)))
        replies = pipe.execute(raise_on_error=False)
        return [replies[a:b] for a, b in bounds]

    def _taken(self, reply: list[str]) -> tuple[Job | None, str | None]:
        if not reply:
            return None, None
        jid, status, *flat = reply
        return self._job(jid, _pairs(flat)), status or None

    def handout(self, job: Job, target: str, wait_key: str, holder: str = "",
                concurrency: int = 0) -> int:
        """Move a waiting job to ``target``'s queued set, held by ``holder`` until a call
        task claims it; returns the hand-out's ticket for the message, 0 if another taker
        had it, -1 if ``target`` is at its ``concurrency`` (0: not checked) — the pump
        counted before, but a gateway call may have taken the last slot since."""
        return int(self._handout(keys=[wait_key, self.queued_key(target), self.job_key(job.id),
                                       self.calling_key(target), self.gwcalling_key(target)],
                                 args=[job.id, target, holder, concurrency]))

    def park(self, job: Job, holder: str = "") -> bool:
        """Put a job back among those waiting for its remaining targets (keeps its place);
        with ``holder``, only while that process still holds it."""
        targets = job.remaining_targets
        sig = waitset_sig(job.tag, targets)
        self.r.hsetnx(self.waitsets_key, sig, json.dumps({"tag": job.tag, "targets": targets}))
        return bool(
            self._park(
                keys=[self.job_key(job.id), self.wait_key(sig), self.wake_key],
                args=[job.id, sig, json.dumps(job.excluded), job.score, self.ns, holder],
            )
        )

    def put_back_later(self, job: Job, target: str, holder: str) -> None:
        """Redis did not answer when a call task had to give ``job`` back: remember it, so
        :meth:`retry_orphans` does once Redis answers again. The process's lease stays
        alive meanwhile, so no sweep would: without this the job would stay "running"."""
        with self._orphans_lock:
            self._orphans.append((job, target, holder))

    def retry_orphans(self) -> int:
        """Give back the jobs :meth:`put_back_later` kept (the lease thread calls this after
        each renewal); returns how many are still kept."""
        with self._orphans_lock:
            pending, self._orphans = self._orphans, []
        kept = []
        for job, target, holder in pending:
            try:
                self.park(job, holder)
                self.release(job.id, target, [], holder)
            except redis.RedisError:
                kept.append((job, target, holder))
        if kept:
            with self._orphans_lock:
                self._orphans.extend(kept)
        elif pending:
            log.info("job store: %d job(s) given back after Redis answered again", len(pending))
        return len(kept)

    def sweep(self, targets: Iterable[str], rel: Any, stale_s: float) -> tuple[int, int, int]:
        """Put back the jobs of every target whose holder's lease lapsed (see ``sweep.lua``).

        ``rel`` is the reliability settings. A handed-out job waits ``lease_s`` for its call
        task after its pumping process is gone (the message is still in the queue), and at
        most ``handout_timeout_s`` in all (a lost message); a running job whose worker is
        gone counts a crash; one its live worker's lease no longer lists (a Redis crash lost
        its finish) waits again. A job naming no holder (stored before leases) comes back after
        ``stale_s``. Returns (handed out, running, ended as poison) totals.
        """
        totals = [0, 0, 0]
        for target in targets:
            got = self._sweep(keys=[self.queued_key(target), self.calling_key(target),
                                    self.wake_key],
                              args=[self.ns, rel.lease_s, rel.handout_timeout_s,
                                    rel.max_crashes, self.retention_s, stale_s,
                                    rel.lease_renew_s])
            totals = [a + int(b) for a, b in zip(totals, got, strict=True)]
        return totals[0], totals[1], totals[2]

    def expire_due(self, recheck_s: float = 30.0, chunk: int = 1000) -> int:
        """End ``expired`` every waiting job of the batches whose deadline passed, wherever
        it waits (not only at a set's head). A batch still running is looked at again
        ``recheck_s`` later (a job put back after the pass); an ended one is forgotten."""
        now = time.time()
        ended = 0
        result = json.dumps({"error": {"code": "expired", "message":
                                       "the batch deadline passed before a target took it"}})
        for batch in self.r.zrangebyscore(self.deadlines_key, "-inf", now, start=0, num=100):
            status, total = self.r.hmget(self.batch_key(batch), "status", "total")
            if status != "in_progress":
                self.r.zrem(self.deadlines_key, batch)
                continue
            for first in range(0, int(total or 0), chunk):
                ended += int(self._expire(
                    keys=[self.batch_key(batch)],
                    args=[self.ns, batch, first, min(int(total), first + chunk), result,
                          self.retention_s]))
            if self.batch_status(batch) == "in_progress":
                self.r.zadd(self.deadlines_key, {batch: now + recheck_s})
            else:
                self.r.zrem(self.deadlines_key, batch)
        return ended

    def waitsets(self) -> dict[str, tuple[str, list[str]]]:
        return {
            sig: (d["tag"], d["targets"])
            for sig, raw in self.r.hgetall(self.waitsets_key).items()
            for d in [json.loads(raw)]
        }

    def set_batch_status(self, batch: str, status: str) -> None:
        self.r.hset(self.batch_key(batch), mapping={"status": status})
