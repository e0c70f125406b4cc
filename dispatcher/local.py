"""A whole dispatch deployment on one machine, for ``dispatch run`` and ``dispatch up``.

Starts what is missing — the state directory's embedded Redis when ``REDIS_URL`` is unset,
the simulator for ``--simulate``, local worker processes — and stops exactly what it
started: workers first, then the simulator (its lease withdrawn), then its use of the
embedded server (shut down when no other command uses it).

    >>> with LocalStack(state_dir, config_dir, simulate=True) as stack:   # doctest: +SKIP
    ...     stack.start_workers(["worker", "--all"])
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from dispatcher.embedded import EmbeddedRedis


def stop_process_groups(procs: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM each process's group (started with ``start_new_session``: a worker and its
    children), wait up to ``timeout`` in all, then SIGKILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def attach_local_redis(state_dir: Path) -> EmbeddedRedis:
    """Use the state directory's embedded server for this process (starting it if it is
    not running) and leave it at exit; ``REDIS_URL`` points at it from now on."""
    server = EmbeddedRedis(state_dir)
    os.environ["REDIS_URL"] = server.start()
    atexit.register(server.stop)
    return server


@contextlib.contextmanager
def signals_held():
    """Ignore Ctrl-C and SIGTERM while stopping: a second Ctrl-C must not cut the stop
    short and leave a worker or the embedded server behind."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM ends ``up``/``run`` the way Ctrl-C does: through their stopping path."""
    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class LocalStack:
    """Owns the processes and servers one command started."""

    def __init__(self, state_dir: Path, config_dir: Path, simulate: bool,
                 sim_latency: tuple[float, float] = (0.05, 0.3)):
        self.state_dir = state_dir
        self.config_dir = config_dir
        self.simulate = simulate
        self.sim_latency = sim_latency
        self.embedded: EmbeddedRedis | None = None
        self.simulator = None
        self.lease = None
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.redis_url: str | None = None

    def start_redis(self) -> str:
        url = os.environ.get("REDIS_URL")
        if not url:
            self.embedded = EmbeddedRedis(self.state_dir)
            url = self.embedded.start()
            os.environ["REDIS_URL"] = url
        self.redis_url = url
        return url

    def start_simulator(self, config, register: bool = True) -> str:
        """Run the provider simulator in this process. ``register``: the cluster's workers
        may use it (a lease in Redis, renewed while this process lives); otherwise only
        this process does."""
        from workers.runtime import get_runtime
        from workers.simulator import Simulator
        from workers.simulators import SimulatorLease

        self.simulator = Simulator(config, latency=self.sim_latency).start()
        rt = get_runtime()
        if register:
            self.lease = SimulatorLease(rt.r, rt.namespace, self.simulator.url).start()
        else:
            rt.own_simulator = self.simulator.url
        return self.simulator.url

    def start_worker(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        env = {**os.environ, "REDIS_URL": self.redis_url or os.environ["REDIS_URL"],
               "DISPATCH_CONFIG": str(self.config_dir)}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dispatcher.cli", *args],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        self.procs.append((name, proc, log_path))
        return proc

    def dead_workers(self) -> list[tuple[str, int, str]]:
        """(name, exit code, last lines of its log) for every worker that stopped."""
        out = []
        for name, proc, log_path in self.procs:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace").splitlines()[-15:]
                out.append((name, proc.returncode, "\n".join(tail)))
        return out

    def stop(self) -> None:
        with signals_held():
            self._stop()

    def _stop(self) -> None:
        stop_process_groups([proc for _, proc, _ in self.procs])
        self.procs.clear()
        if self.lease is not None:
            self.lease.stop()
            self.lease = None
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None
            os.environ.pop("REDIS_URL", None)

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
