"""What ``dispatch run --resume BATCH`` checks before it sends anything.

A batch remembers whether it is simulated; resuming follows it, and a flag that says
otherwise is refused (a simulated batch must never reach real providers, nor a real batch
be answered by the simulator). The configuration must still serve every unfinished job.
"""

from __future__ import annotations

import json

from dispatcher.config import Config


def simulated_conflict(batch: str, batch_simulated: bool, flag: bool | None) -> str | None:
    """Why the ``--simulate``/``--no-simulate`` flag contradicts the batch, or None."""
    if flag is None or flag == batch_simulated:
        return None
    if batch_simulated:
        return (f"batch {batch} was submitted with --simulate: its jobs go to the simulator, "
                "never to real providers; resume it without --no-simulate")
    return (f"batch {batch} was submitted for the real providers: resuming it with "
            "--simulate would answer its jobs from the simulator; resume it without --simulate")


def unserved(target_lists: list[list[str]], cfg: Config) -> list[str]:
    """The unfinished jobs' target lists (``a/x, b/y``) of which no target is usable now."""
    known = {t.key: t for t in cfg.targets()}
    out = []
    for targets in target_lists:
        if not any(ref in known and cfg.usable(known[ref]) for ref in targets):
            out.append(", ".join(targets))
    return sorted(set(out))


def pending_target_lists(rt, batch: str) -> list[list[str]]:
    """The distinct target lists of the batch's unfinished jobs."""
    from workers.jobstore import TERMINAL, job_id

    pending = [i for i, _, state, _ in rt.store.results(batch) if state not in TERMINAL]
    pipe = rt.r.pipeline(transaction=False)
    for i in pending:
        pipe.hget(rt.store.job_key(job_id(batch, i)), "targets")
    return [json.loads(t) for t in {raw for raw in pipe.execute() if raw}]
