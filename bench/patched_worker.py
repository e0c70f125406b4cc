"""``dispatch worker`` with the proposed neuron-limit fix applied in-process (bench only).

The quota engine charges neurons in milli-neurons (``Cost.of(Unit.neurons)`` returns
``milli_neurons``) but compares them with the configured limit in whole neurons, so a
10,000 neurons/day limit admits 10 neurons a day. The fix proposed for
workers/quota/engine.py scales neuron limits by ``NEURON_SCALE`` where the engine builds
its limit specs; this launcher applies exactly that, by wrapping ``limit_specs``, so the
benchmark can show before/after without editing the shared source.

    python bench/patched_worker.py worker --provider cloudflare ...
"""

from __future__ import annotations

import dataclasses
import os
import sys

import workers.quota.engine as engine
from dispatcher.config.models import Unit
from workers.quota.costs import NEURON_SCALE

_real = engine.limit_specs


def limit_specs(*args, **kwargs):
    out = []
    for s in _real(*args, **kwargs):
        if s.limit.unit is Unit.neurons:
            s = dataclasses.replace(s, limit=s.limit.model_copy(
                update={"limit": s.limit.limit * NEURON_SCALE}))
        out.append(s)
    return out


if os.environ.get("BENCH_PATCH_NEURONS", "1") == "1":
    engine.limit_specs = limit_specs


def patch_celery() -> None:
    """Second proposed fix (BENCH_PATCH_CELERY=1): no result-backend traffic per task.

    Results live in the job store, so ``dispatch.pump``/``dispatch.call`` need no Celery
    result (SETEX + PUBLISH per task, and a SUBSCRIBE/UNSUBSCRIBE by every publisher
    outside a worker) nor the STARTED state (GET + SETEX + PUBLISH per task)."""
    import workers.tasks as tasks
    from workers.celery_app import app

    app.conf.task_track_started = False
    tasks.call.ignore_result = True
    tasks.pump.ignore_result = True


if os.environ.get("BENCH_PATCH_CELERY") == "1":
    patch_celery()

if __name__ == "__main__":
    from dispatcher.cli import main

    sys.argv[0] = "dispatch"
    main()
