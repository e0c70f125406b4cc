"""Per-process singletons a worker needs: config, Redis, quota engines, job store, clients.

Built once, on first use, from the environment (``REDIS_URL``, ``DISPATCH_CONFIG``,
``DISPATCH_NAMESPACE``), so every thread of a worker shares one connection pool, one
pooled HTTP client per provider and one loaded copy of the Lua scripts.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property

import redis

from dispatcher.config import Config, load_config
from dispatcher.connect import redis_client
from workers.jobstore import JobStore
from workers.providers.client import ClientPool
from workers.quota.engine import QuotaEngine
from workers.simulators import live_simulator
from workers.slots import Slots


@dataclass
class Runtime:
    config: Config
    r: redis.Redis
    namespace: str
    own_simulator: str | None = None
    """A simulator of this process alone (``providers --simulate --test``): used here,
    never registered, so no other process's traffic follows it."""
    _sim_url: tuple[float, str | None] = field(default=(0.0, None), repr=False)
    _waitsets: tuple[float, dict] = field(default=(0.0, {}), repr=False)

    @cached_property
    def store(self) -> JobStore:
        days = self.config.settings.jobs.retention_days
        return JobStore(self.r, self.namespace, retention_s=days * 86400)

    @cached_property
    def live_quota(self) -> QuotaEngine:
        return QuotaEngine(self.r, self.config, namespace=self.namespace, simulated=False)

    @cached_property
    def sim_quota(self) -> QuotaEngine:
        return QuotaEngine(self.r, self.config, namespace=self.namespace, simulated=True)

    def quota(self, simulated: bool) -> QuotaEngine:
        return self.sim_quota if simulated else self.live_quota

    @cached_property
    def slots(self) -> Slots:
        """The concurrency slots this process's gateway calls hold (workers/slots.py)."""
        return Slots(self)

    @cached_property
    def clients(self) -> ClientPool:
        return ClientPool(self.config.providers)

    def _sets(self) -> dict[str, tuple[str, list[str]]]:
        """The waiting sets, cached briefly: sets are rarely created."""
        at, sets = self._waitsets
        if time.monotonic() - at > 2.0:
            sets = self.store.waitsets()
            self._waitsets = (time.monotonic(), sets)
        return sets

    def sigs_with(self, target: str) -> list[str]:
        """The waiting sets ``target`` may serve."""
        return [sig for sig, (_, targets) in self._sets().items() if target in targets]

    def sigs_first(self, target: str) -> list[str]:
        """The waiting sets whose jobs prefer ``target`` above every other target."""
        return [sig for sig, (_, targets) in self._sets().items() if targets[:1] == [target]]

    def simulator_url(self) -> str | None:
        """Where simulated jobs are sent: ``DISPATCH_SIMULATOR_URL``, this process's own
        simulator, else the cluster's registered one (:mod:`workers.simulators`)."""
        env = os.environ.get("DISPATCH_SIMULATOR_URL")
        if env:
            return env.rstrip("/")
        if self.own_simulator:
            return self.own_simulator
        at, url = self._sim_url
        if time.monotonic() - at > 1.0:
            url = live_simulator(self.r, self.namespace)
            self._sim_url = (time.monotonic(), url)
        return url

    def base_url(self, provider: str, simulated: bool) -> str | None:
        if simulated:
            sim = self.simulator_url()
            return f"{sim}/{provider}/v1" if sim else None
        return self.config.status(provider).base_url


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            cfg = load_config(os.environ.get("DISPATCH_CONFIG"))
            ns = os.environ.get("DISPATCH_NAMESPACE", "dispatch")
            _runtime = Runtime(cfg, redis_client(), ns)
        return _runtime


def reset_runtime() -> None:
    """Forget the singletons (tests that switch configuration in one process)."""
    global _runtime
    with _lock:
        _runtime = None
