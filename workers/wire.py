"""Plain Redis commands written by hand on a pooled connection, for the hottest paths.

redis-py's generic path (argument encoding, retry and metrics wrappers, pipeline objects)
costs several times a short command on a small machine; on the HTTP gateway that CPU is
taken from the answer being sent (one GIL). This packs the commands in the wire protocol
(RESP) and writes them at once; a client that is not a plain pooled one (single
connection, cluster) takes the generic pipeline instead. The quota engine's scripts
(``QuotaEngine._evalsha``) and the gateway's slot writes both go through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError


def packed(*parts: Any) -> bytes:
    """One command in RESP: ``packed("ZREM", key, member)``."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        b = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(out)


def evalsha(sha: str, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
    """The command tuple of ``EVALSHA sha numkeys keys... args...`` for :func:`call_many`."""
    return ("EVALSHA", sha, len(keys), *keys, *args)


def call_one(r: Any, command: Sequence[Any]) -> Any:
    """One command, one round trip; an error reply is raised (``NoScriptError``...)."""
    return call_many(r, [command], raise_on_error=True)[0]


def call_many(r: Any, commands: Sequence[Sequence[Any]],
              raise_on_error: bool = False) -> list[Any]:
    """Run ``commands`` in one write and one round trip; each reply in order, an error
    reply as its exception, or raised with ``raise_on_error`` (every reply is read first:
    the connection stays in step)."""
    pool = getattr(r, "connection_pool", None)
    if pool is None or getattr(r, "connection", None) is not None:
        pipe = r.pipeline(transaction=False)
        for cmd in commands:
            pipe.execute_command(*cmd)
        return _checked(pipe.execute(raise_on_error=False), raise_on_error)
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(packed(*cmd) for cmd in commands)])
        out: list[Any] = []
        for _ in commands:
            try:
                out.append(conn.read_response())
            except ResponseError as exc:
                out.append(exc)
    finally:
        pool.release(conn)
    return _checked(out, raise_on_error)


def _checked(replies: list[Any], raise_on_error: bool) -> list[Any]:
    if raise_on_error:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies
