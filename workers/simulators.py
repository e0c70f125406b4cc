"""Where a cluster's simulated traffic goes: simulators registered with a liveness lease.

A process that runs a simulator for a cluster (``dispatch up --simulate``,
``dispatch run --simulate``) registers it; workers send simulated jobs to the *oldest*
live registration, so every worker uses the same simulator while it lives. A lease that
is not renewed (its process died) expires after ``LEASE_S``; a clean stop withdraws it at
once and the next registration takes over. Nothing can overwrite another process's
registration: a short-lived command (``dispatch providers --simulate --test``) uses its
own simulator in-process and never registers it.

Keys: ``ns:simulators`` (zset url -> first registration time) and
``ns:simulator:<url>`` (the lease, with a TTL).
"""

from __future__ import annotations

import contextlib
import threading
import time

import redis

LEASE_S = 15.0
RENEW_S = LEASE_S / 3


def _zset(ns: str) -> str:
    return f"{ns}:simulators"


def _lease(ns: str, url: str) -> str:
    return f"{ns}:simulator:{url}"


def renew(r: redis.Redis, ns: str, url: str) -> None:
    """Register ``url`` (keeping its place if already there) and extend its lease."""
    pipe = r.pipeline(transaction=False)
    pipe.zadd(_zset(ns), {url: time.time()}, nx=True)
    pipe.set(_lease(ns, url), "1", px=int(LEASE_S * 1000))
    pipe.execute()


def withdraw(r: redis.Redis, ns: str, url: str) -> None:
    pipe = r.pipeline(transaction=False)
    pipe.delete(_lease(ns, url))
    pipe.zrem(_zset(ns), url)
    pipe.execute()


def live_simulator(r: redis.Redis, ns: str) -> str | None:
    """The oldest registered simulator whose lease is alive (dead ones are dropped)."""
    urls = r.zrange(_zset(ns), 0, -1)
    if not urls:
        return None
    alive = r.mget([_lease(ns, u) for u in urls])
    dead = [u for u, a in zip(urls, alive, strict=True) if a is None]
    if dead:
        r.zrem(_zset(ns), *dead)
    return next((u for u, a in zip(urls, alive, strict=True) if a is not None), None)


class SimulatorLease:
    """Keeps one simulator registered until :meth:`stop` (a daemon thread renews it)."""

    def __init__(self, r: redis.Redis, ns: str, url: str):
        self.r, self.ns, self.url = r, ns, url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="simulator-lease",
                                        daemon=True)

    def start(self) -> SimulatorLease:
        renew(self.r, self.ns, self.url)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            with contextlib.suppress(redis.RedisError):  # Redis restarting: renew next time
                renew(self.r, self.ns, self.url)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):
            withdraw(self.r, self.ns, self.url)
