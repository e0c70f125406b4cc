"""Usage of served calls for ``dispatch report``, written in batches off the request path.

The attempt path defers a successful call's usage write (a worker writes it with the
job's result). Here a background thread collects them and writes every ``FLUSH_S`` in
one pipeline, summed per hash field first: the answer never waits for it, and a busy
gateway costs one Redis round trip of a few commands per flush, not five commands per
request (they competed with requests for the CPU). A gateway killed hard loses at most
the last flush's report lines (never quota: that was reserved and reconciled before the
answer).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import redis

from workers.usage import usage_writer

log = logging.getLogger("dispatch.gateway")
FLUSH_S = 0.5


class Summed:
    """Stands in for a pipeline while the buffered calls queue their usage: increments of
    the same hash field are added up, then written once (:meth:`write`).

        >>> s = Summed(); s.hincrby("k", "a", 2); s.hincrby("k", "a", 3); s.expire("k", 60)
        >>> s.fields, s.ttls
        ({('k', 'a'): 5}, {'k': 60})
    """

    def __init__(self) -> None:
        self.fields: dict[tuple[str, str], int] = {}
        self.ttls: dict[str, int] = {}

    def hincrby(self, key: str, field: str, amount: int = 1) -> None:
        self.fields[(key, field)] = self.fields.get((key, field), 0) + int(amount)

    def expire(self, key: str, seconds: int) -> None:
        self.ttls[key] = max(self.ttls.get(key, 0), int(seconds))

    def write(self, pipe: Any) -> None:
        for (key, field), amount in self.fields.items():
            pipe.hincrby(key, field, amount)
        for key, seconds in self.ttls.items():
            pipe.expire(key, seconds)


class UsageBuffer:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, str, Any, bool]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, rt: Any, target: str, usage: Any, simulated: bool) -> None:
        self._queue.put((rt, target, usage, simulated))
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="gateway-usage",
                                                    daemon=True)
                    self._thread.start()

    def flush(self) -> int:
        """Write everything queued so far; returns how many calls were written."""
        items: list[tuple[Any, str, Any, bool]] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not items:
            return 0
        summed = Summed()
        for rt, target, usage, simulated in items:
            usage_writer(rt, target, usage, simulated)(summed)
        try:
            pipe = items[0][0].r.pipeline(transaction=False)
            summed.write(pipe)
            pipe.execute()
        except redis.RedisError as exc:  # a report line must never fail anything
            log.warning("usage of %d calls not recorded (Redis: %s)", len(items), exc)
        return len(items)

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(FLUSH_S):
            self.flush()


BUFFER = UsageBuffer()
