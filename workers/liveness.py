"""Worker liveness: one heartbeat lease per process, so the jobs a dead worker held come back.

Every process that holds jobs (a router that hands jobs out, a caller that runs them, a
``dispatch submit`` that hands out the first ones) has an id and keeps the key
``ns:lease:ID`` alive in Redis (``SET ... PX lease``, renewed every ``lease_renew_s``). Each
job it holds names it (``holder`` in the job hash). The routers' sweep
(:meth:`workers.jobstore.JobStore.sweep`) puts back the jobs whose holder's key is gone.

Why not Celery's visibility timeout: it must outlast the longest call, so it is minutes;
a chained job has no message at all; and a message redelivered while its first worker is
still alive would start a slow call twice. A lease says "this process is alive" within
seconds, whatever the call's length.

    >>> holder = holder_id(runtime)       # doctest: +SKIP  (starts the heartbeat once)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import redis

log = logging.getLogger("dispatch.liveness")


def lease_key(namespace: str, holder: str) -> str:
    return f"{namespace}:lease:{holder}"


class Lease:
    """A heartbeat lease renewed by a daemon thread; deleted when the process exits cleanly."""

    def __init__(self, r: redis.Redis, namespace: str, lease_s: float, renew_s: float,
                 after_renew: Callable[[], object] | None = None):
        self.r = r
        self.after_renew = after_renew
        """Called after each renewal (from the lease thread): Redis answers again."""
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.key = lease_key(namespace, self.id)
        self.lease_ms = int(lease_s * 1000)
        self.renew_s = renew_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.time()
        self._held: dict[str, int] = {}
        self._held_lock = threading.Lock()

    def start(self) -> Lease:
        self.renew()  # held before the first job names it
        self._thread = threading.Thread(target=self._loop, name="dispatch-lease", daemon=True)
        self._thread.start()
        return self

    def hold(self, jid: str) -> None:
        """This process runs ``jid`` now (listed in the lease from its next renewal)."""
        with self._held_lock:
            self._held[jid] = self._held.get(jid, 0) + 1

    def drop(self, jid: str) -> None:
        with self._held_lock:
            n = self._held.pop(jid, 0) - 1
            if n > 0:
                self._held[jid] = n

    def renew(self) -> None:
        """Renew, listing the jobs this process really runs: after a Redis crash lost a
        finish, a job may look "running" under a live holder that forgot it; the sweep
        puts back such a job once the lease, renewed since its claim, does not list it."""
        with self._held_lock:
            jobs = sorted(self._held)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": self._started,
                "lease_ms": self.lease_ms, "jobs": jobs}
        self.r.set(self.key, json.dumps(info, separators=(",", ":")), px=self.lease_ms)

    def _loop(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self.renew()
                if self.after_renew is not None:
                    self.after_renew()
            except redis.RedisError as exc:  # Redis restarting: the next renewal restores it
                log.warning("lease %s: renewal failed (%s)", self.id, exc)

    def stop(self) -> None:
        """The process ends cleanly: give the lease up, so what it still holds (nothing,
        after a warm shutdown) is not waited for."""
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self.r.delete(self.key)


_leases: dict[tuple[int, str], Lease] = {}
_lock = threading.Lock()


def holder_id(rt) -> str:
    """This process's lease id on ``rt``'s Redis and namespace, started on first use."""
    return lease_of(rt).id


def lease_of(rt) -> Lease:
    """This process's lease on ``rt``'s Redis and namespace, started on first use."""
    key = (id(rt.r), rt.namespace)
    with _lock:
        lease = _leases.get(key)
        if lease is None:
            rel = rt.config.settings.reliability
            lease = Lease(rt.r, rt.namespace, rel.lease_s, rel.lease_renew_s,
                          after_renew=rt.store.retry_orphans).start()
            _leases[key] = lease
        return lease


@atexit.register
def stop_all() -> None:
    with _lock:
        for lease in _leases.values():
            lease.stop()
        _leases.clear()
