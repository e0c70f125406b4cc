"""The Celery tasks: ``dispatch.pump`` on tag queues, ``dispatch.call`` on provider queues.

Arguments are ids only (job id, target, waiting-set signature); ``argsrepr`` shows the
batch, custom_id, tag and target so Flower identifies jobs without ever showing a prompt.
Completions live in the job store; the tasks' own return values (ids and status) reach
Flower through task events and the worker log, so nothing is written to Celery's result
store and a publish needs no result subscription.
"""

from __future__ import annotations

import logging
import threading

from celery import bootsteps

from workers.caller import Caller
from workers.celery_app import app, provider_queue, tag_queue
from workers.pump import Pumper
from workers.runtime import get_runtime

log = logging.getLogger("dispatch.tasks")


def publish_call(job, target: str, ticket: int | None = None) -> None:
    """Hand a job to its target's provider queue; Flower sees ids, never the prompt.

    ``ticket`` names the hand-out: only the message of a job's latest hand-out may start it.
    """
    call.apply_async(
        args=[job.id, target, ticket],
        queue=provider_queue(target.split("/", 1)[0]),
        argsrepr=f"(target={target}, tag={job.tag}, custom_id={job.custom_id}, "
        f"batch={job.batch})",
    )


_pumper: Pumper | None = None
_pumper_lock = threading.Lock()


def pumper() -> Pumper:
    """The process's pumper, on the current runtime (tests may switch runtimes)."""
    global _pumper
    rt = get_runtime()
    with _pumper_lock:
        if _pumper is None or _pumper.rt is not rt:
            _pumper = Pumper(rt, publish_call)
        return _pumper


def kick(sigs: set[str] | list[str], batch: str = "") -> None:
    """Ask the routers to look at these waiting sets (one pump task per set)."""
    if not sigs:
        return
    rt = get_runtime()
    sets = rt.store.waitsets()
    for sig in sigs:
        tag = sets.get(sig, ("default", []))[0]
        pump.apply_async(
            args=[sig], queue=tag_queue(tag), argsrepr=f"(tag={tag}, batch={batch or '-'})"
        )


@app.task(name="dispatch.pump", ignore_result=True)
def pump(sig: str) -> dict:
    """Route the jobs waiting for one list of targets to whichever can start them soonest."""
    rt = get_runtime()
    tag, targets = rt.store.waitsets().get(sig, ("", []))
    if not targets:
        return {"sig": sig, "status": "empty"}
    next_in = pumper().pump(sig, tag, targets)
    return {"sig": sig, "tag": tag, "next_check_s": round(next_in, 3)}


@app.task(name="dispatch.call", ignore_result=True)
def call(job_id: str, target: str, ticket: int | None = None) -> dict:
    """Take quota for one job on one target, call it, and record what happened."""
    return Caller(get_runtime()).run(job_id, target, ticket)


class Releaser(bootsteps.StartStopStep):
    """In router workers: a thread that moves waiting jobs as capacity returns.

    It sleeps until the soonest moment a waiting set could move, or until a worker
    signals freed capacity on the wake list (BLPOP) — never a busy loop.
    """

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker) -> None:
        queues = {q.name for q in worker.app.amqp.queues.consume_from.values()} if (
            worker.app.amqp.queues.consume_from
        ) else set()
        if not any(q.startswith(tag_queue()) for q in queues):
            return
        self._thread = threading.Thread(target=self._run, name="dispatch-releaser", daemon=True)
        self._thread.start()

    def stop(self, worker) -> None:
        self._stop.set()

    def _run(self) -> None:
        from workers.releaser import release_loop

        release_loop(get_runtime(), pumper(), self._stop)


class Liveness(bootsteps.StartStopStep):
    """Every worker process holds a heartbeat lease from its start (workers/liveness.py):
    the jobs it takes name it, and ``dispatch run`` can tell that workers are up."""

    requires = {"celery.worker.components:Pool"}

    def start(self, worker) -> None:
        from workers.liveness import holder_id

        try:
            holder_id(get_runtime())
        except Exception as exc:  # Redis not up yet: the first job starts it instead
            log.warning("liveness: lease not started yet (%s)", exc)


app.steps["worker"].add(Releaser)
app.steps["worker"].add(Liveness)
import workers.catalog_watch  # noqa: E402,F401 - the periodic catalog check: task, bootstep, metric
