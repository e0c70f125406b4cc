"""What every request handler shares: the runtime (config, Redis, quota, clients) and mode."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from dispatcher.config import Config


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

    def bytes_redis(self) -> redis.Redis:
        if self.raw is None:
            pool = self.r.connection_pool
            kwargs = {**pool.connection_kwargs, "decode_responses": False}
            self.raw = redis.Redis(connection_pool=redis.ConnectionPool(
                connection_class=pool.connection_class, **kwargs))
        return self.raw
