"""``dispatch flower``: Flower on the dispatch Celery app.

Flower can revoke tasks and shut workers down, and its own default is to listen on every
interface with no authentication. Here it listens on 127.0.0.1 unless told otherwise, and
refuses any other address without authentication (``--basic-auth`` or
``FLOWER_BASIC_AUTH``, or Flower's OAuth via ``FLOWER_AUTH_PROVIDER`` + ``FLOWER_AUTH``).
Credentials are handed to Flower through its environment, never its argv (visible in ps).

Task arguments are ids only (``argsrepr`` shows batch, custom_id, tag, target), so Flower
never displays a prompt or a key.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from typing import Annotated

import typer

from dispatcher.cli_support import fail, require_redis

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
TASKS_COLUMNS = "name,state,args,received,runtime,worker"
"""Flower hides ``args`` by default; ours are ids (batch, custom_id, tag, target): show them."""


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; '' and 0.0.0.0 mean every interface."""
    if address.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def valid_basic_auth(value: str) -> bool:
    """Flower's form: ``user:password``, several separated by commas."""
    pairs = value.split(",")
    return all(u and p for u, _, p in (pair.partition(":") for pair in pairs))


def flower_argv(port: int, address: str, url_prefix: str | None = None,
                max_tasks: int | None = None, persistent_db: str | None = None,
                tasks_columns: str = TASKS_COLUMNS) -> list[str]:
    """The ``celery flower`` arguments (no credentials: those go through the environment)."""
    argv = ["flower", f"--port={port}", f"--address={address}",
            f"--tasks_columns={tasks_columns}"]
    if url_prefix:
        argv.append(f"--url_prefix={url_prefix}")
    if max_tasks:
        argv.append(f"--max_tasks={max_tasks}")
    if persistent_db:
        argv += ["--persistent=True", f"--db={persistent_db}"]
    return argv


def check_exposure(address: str, basic_auth: str | None, env: dict[str, str]) -> str | None:
    """Why this bind must be refused, or None when it is allowed."""
    if basic_auth is not None and not valid_basic_auth(basic_auth):
        return "--basic-auth / FLOWER_BASIC_AUTH must be user:password (comma-separated)"
    if is_loopback(address):
        return None
    oauth = bool(env.get("FLOWER_AUTH_PROVIDER") and env.get("FLOWER_AUTH"))
    if basic_auth or oauth:
        return None
    where = address or "every interface"
    return (f"refusing to serve Flower on {where} without authentication: Flower can "
            "revoke tasks and stop workers. Give --basic-auth user:password (or set "
            "FLOWER_BASIC_AUTH), or keep the default --address 127.0.0.1")


def flower(
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 5555,
    address: Annotated[str, typer.Option(
        "--address", help="Interface to listen on; other than loopback needs auth.")
    ] = "127.0.0.1",
    basic_auth: Annotated[str | None, typer.Option(
        "--basic-auth", metavar="USER:PASS", envvar="FLOWER_BASIC_AUTH", show_envvar=True,
        help="HTTP basic auth (prefer the environment variable: argv is visible in ps).",
        show_default=False)] = None,
    url_prefix: Annotated[str | None, typer.Option(
        "--url-prefix", help="Serve under this path (behind a reverse proxy).",
        show_default=False)] = None,
    max_tasks: Annotated[int | None, typer.Option(
        "--max-tasks", min=1, help="Tasks kept in memory (Flower's default: 100000).",
        show_default=False)] = None,
    persistent_db: Annotated[str | None, typer.Option(
        "--persistent-db", metavar="FILE", help="Keep Flower's task history in this file.",
        show_default=False)] = None,
    tasks_columns: Annotated[str, typer.Option(
        "--tasks-columns", help="Columns of the tasks page (Flower's slugs).")
    ] = TASKS_COLUMNS,
) -> None:
    """Flower (Celery's web monitor) on the dispatch app: workers, tasks, queue lengths."""
    require_redis()
    problem = check_exposure(address, basic_auth, dict(os.environ))
    if problem:
        fail(problem)
    if basic_auth:
        os.environ["FLOWER_BASIC_AUTH"] = basic_auth  # Flower reads it; argv stays clean
    from workers.celery_app import app as celery_app

    # Workers run without task events (they cost Redis round trips on every task); Flower
    # switches them on every few seconds while it runs — and here once at start, so the
    # first tasks are not missed.
    with contextlib.suppress(Exception):
        celery_app.control.enable_events()
    celery_app.start(flower_argv(port, address, url_prefix, max_tasks, persistent_db,
                                 tasks_columns))


def register(app: typer.Typer) -> None:
    """Add ``dispatch flower`` to the CLI."""
    app.command("flower")(flower)
