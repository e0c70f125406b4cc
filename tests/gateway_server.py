"""A real ``dispatch serve`` app on uvicorn in a background thread, for the gateway tests.

The app is the one ``dispatch serve`` builds (:func:`dispatcher.gateway.app.build_app`),
served by uvicorn on a free loopback port, against the test cluster's Redis namespace and
simulator (tests/cluster.py): real HTTP, real quota scripts, real upstream calls.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayServer:
    def __init__(self, config_dir: Path, tokens: list[str] | None = None,
                 simulate: bool = True, rt=None):
        self.config_dir = config_dir
        self.tokens = tokens or []
        self.simulate = simulate
        self.port = free_port()
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.gw = None
        self.rt = rt
        """A runtime of its own (e.g. on an unreachable Redis); default: the process's."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GatewayServer:
        from dispatcher.config import load_config
        from dispatcher.gateway.app import build_app
        from dispatcher.gateway.state import Gateway
        from workers.runtime import get_runtime

        rt = self.rt
        if rt is None:
            rt = get_runtime()
            rt.quota(self.simulate).ensure_limits()
        self.gw = Gateway(rt, simulate=self.simulate, tokens=self.tokens,
                          cfg=load_config(self.config_dir, simulate=self.simulate))
        config = uvicorn.Config(build_app(self.gw), host="127.0.0.1", port=self.port,
                                log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)
        self.thread.start()
        end = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > end or not self.thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=15)
