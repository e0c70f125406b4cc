"""Baseline for bench_overhead.py: a Celery app with the project's own settings
(``workers.celery_app.make_app``: Redis broker and result store, acks_late, prefetch 1,
events, track_started) and one task that does nothing but count itself.

    celery -A bench.noop_app worker -Q bench.noop -P threads -c 8
"""

from __future__ import annotations

import os

import redis

from workers.celery_app import make_app

URL = os.environ["REDIS_URL"]
COUNTER = os.environ.get("BENCH_NOOP_COUNTER", "bench:noop:done")

app = make_app(URL)
app.conf.update(imports=(), task_default_queue="bench.noop")
_r = redis.Redis.from_url(URL)


@app.task(name="bench.noop")
def noop() -> None:
    _r.incr(COUNTER)


@app.task(name="bench.stamp", ignore_result=True)
def stamp(sent_at: float) -> None:
    """Celery's own hop, for bench_latency.py: seconds from before ``apply_async`` to here."""
    import time

    _r.rpush(COUNTER + ":hops", time.time() - sent_at)
