"""Submitting batches to a cluster and collecting their results (I/O around the store).

    >>> batch_id = submit(specs, simulated=False, deadline_s=86400)   # doctest: +SKIP
    >>> write_batch_results(batch_id, "out.jsonl")                      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dispatcher.batchfile import JobSpec
from dispatcher.results import result_line, write_results
from workers.jobstore import split_job_id


def submit(specs: list[JobSpec], *, simulated: bool, deadline_s: float, name: str = "",
           priority: str = "normal") -> str:
    """Store the jobs, queue them, and move what can start now. Returns the batch id.

    The submitter hands the first jobs to idle targets itself (one hop less than asking a
    router first); the routers' pump tasks and release loop move the rest as capacity
    returns. A set the submitter emptied needs no pump task (a job put back later wakes
    the routers itself).
    """
    from workers.runtime import get_runtime
    from workers.tasks import kick, pumper

    rt = get_runtime()
    batch, sets = rt.store.create_batch(specs, simulated=simulated, deadline_s=deadline_s,
                                        name=name, priority=priority,
                                        weights=rt.config.settings.priorities)
    pumper().known_active(batch)
    waiting = set()
    for sig, (tag, targets) in sets.items():
        pumper().pump(sig, tag, targets, max_jobs=INLINE_DISPATCH)
        if rt.r.zcard(rt.store.wait_key(sig)):
            waiting.add(sig)
    kick(waiting, batch)  # only sets with jobs left: the rest are on their way already
    return batch


#: At most this many jobs per waiting set are handed out by the submitter itself.
INLINE_DISPATCH = 64


def to_result_line(batch: str, index: int, custom_id: str, state: str,
                   result: dict[str, Any] | None) -> dict[str, Any]:
    """The OpenAI batch output line for one stored job (pending jobs say so)."""
    result = result or {}
    dispatch = result.get("dispatch") or {}
    if "status_code" in result:
        body = result.get("body")
        request_id = body.get("id") if isinstance(body, dict) else None
        return result_line(custom_id, batch_id=batch, index=index,
                           status_code=result["status_code"], body=body, error=None,
                           request_id=request_id, dispatch=dispatch)
    error = result.get("error") or {
        "code": "expired" if state != "cancelled" else "cancelled",
        "message": f"the job did not finish (state: {state})",
    }
    return result_line(custom_id, batch_id=batch, index=index, status_code=None, body=None,
                       error=error, request_id=None, dispatch=dispatch)


def result_lines(batch: str) -> Iterator[dict[str, Any]]:
    from workers.runtime import get_runtime

    for index, custom_id, state, result in get_runtime().store.results(batch):
        yield to_result_line(batch, index, custom_id, state, result)


def write_batch_results(batch: str, out: str | Path) -> int:
    return write_results(out, result_lines(batch))


def cancel(batch: str) -> int:
    """Cancel a batch: waiting jobs end as ``cancelled`` now, running ones finish first."""
    from workers.runtime import get_runtime

    rt = get_runtime()
    store = rt.store
    store.set_batch_status(batch, "cancelled")
    ended = 0
    for sig in store.waitsets():
        key = store.wait_key(sig)
        members = [m for m in rt.r.zrange(key, 0, -1) if split_job_id(m)[0] == batch]
        for jid in members:
            rt.r.zrem(key, jid)
            job = store.load(jid)
            if job and store.finish(job, "cancelled", {"error": {
                    "code": "cancelled", "message": "the batch was cancelled"}}):
                ended += 1
    return ended
