"""What every request handler shares: the runtime (config, Redis, quota, clients) and mode."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from dispatcher.config import Config
from dispatcher.routing import Memo

T = TypeVar("T")
THREADS = 256
"""Threads for blocking work: an upstream call holds one for its whole duration."""
_POOL = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="gateway")


@dataclass
class Gateway:
    """One per server process; ``simulate`` sends every call to the simulator."""

    rt: object
    simulate: bool
    tokens: list[str] = field(default_factory=list)
    cfg: Config | None = None
    """The configuration as loaded for this mode (``--simulate``: every provider enabled);
    None: the runtime's."""
    raw: redis.Redis | None = None
    """A bytes-mode client on the same Redis (uploaded files are bytes)."""
    _memo: Memo | None = None

    @property
    def memo(self) -> Memo:
        """Routes and enablement, cached for validation (the config is fixed per process)."""
        if self._memo is None:
            self._memo = Memo(self.config)
        return self._memo

    @property
    def config(self) -> Config:
        return self.cfg or self.rt.config  # type: ignore[attr-defined]

    @property
    def namespace(self) -> str:
        return self.rt.namespace  # type: ignore[attr-defined]

    @property
    def r(self) -> redis.Redis:
        return self.rt.r  # type: ignore[attr-defined]

    def quota(self):
        return self.rt.quota(self.simulate)  # type: ignore[attr-defined]

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work (Redis scripts, an upstream call) on the gateway's thread pool
        (lighter per call than anyio's limiter-managed threads)."""
        return await asyncio.get_running_loop().run_in_executor(_POOL, functools.partial(
            fn, *args))

    def bytes_redis(self) -> redis.Redis:
        if self.raw is None:
            pool = self.r.connection_pool
            kwargs = {**pool.connection_kwargs, "decode_responses": False}
            self.raw = redis.Redis(connection_pool=redis.ConnectionPool(
                connection_class=pool.connection_class, **kwargs))
        return self.raw
