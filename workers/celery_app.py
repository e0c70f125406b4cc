"""The Celery app: Redis broker and result store from ``REDIS_URL``, never AMQP.

Celery's default broker is AMQP; RabbitMQ runs on many machines, so an app that silently
fell back to it would appear to work while bypassing Redis. Importing this module without
``REDIS_URL`` therefore fails at once with a clear message.

    $ REDIS_URL=redis://127.0.0.1:6379/0 celery -A workers.celery_app worker -Q tag.fast
"""

from __future__ import annotations

import os

from celery import Celery

from dispatcher.connect import redis_url


def _queue_prefix() -> str:
    """Deployments sharing one Redis database keep apart by namespace, queues included."""
    ns = os.environ.get("DISPATCH_NAMESPACE", "dispatch")
    return "" if ns == "dispatch" else f"{ns}."


def tag_queue(tag: str = "") -> str:
    """The routers' queue of a tag (``tag.fast``); with no tag, the common prefix."""
    return f"{_queue_prefix()}tag.{tag}"


def provider_queue(provider: str = "") -> str:
    """The callers' queue of a provider (``prov.groq``); with no name, the common prefix."""
    return f"{_queue_prefix()}prov.{provider}"


def visibility_timeout() -> int:
    """Seconds before Redis redelivers an unacknowledged message.

    It must exceed the longest a call task may hold its message (inline quota wait, the
    upstream timeout times the retries, backoffs). Call tasks never park long waits in
    worker memory — they hand the job back to Redis — so minutes suffice, and a dead
    worker's jobs come back in minutes rather than the default hour.
    """
    return int(os.environ.get("DISPATCH_VISIBILITY_TIMEOUT", "600"))


def _survive_broker_restart() -> None:
    """Keep a worker alive when Redis restarts under it (kombu 5.7).

    On a lost connection Celery closes the broken channel. Two things may then still touch
    it: its QoS pushing delivered-but-unacknowledged messages back to Redis, and a late
    acknowledgement (or rejection) of a task that ended meanwhile. Both go through a
    connection that no longer exists: ``AttributeError`` escapes Celery's ``ignore_errors``
    and the worker dies with "Unrecoverable error". Skipping them is safe: the messages are
    still in Redis' unacked hash and come back after the visibility timeout, and a
    redelivered job finds its true state in the job store.
    """
    from kombu.transport import redis as kombu_redis

    qos = kombu_redis.QoS
    if getattr(qos.restore_unacked, "_dispatch_patched", False):
        return

    def guarded(original, forget):  # type: ignore[no-untyped-def]
        def method(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            try:
                return original(self, *args, **kwargs)
            except AttributeError:
                forget(self, *args)
                return None

        method._dispatch_patched = True  # type: ignore[attr-defined]
        return method

    def forget_all(self, *args):  # type: ignore[no-untyped-def]
        self._delivered.clear()

    def forget_one(self, delivery_tag, *args):  # type: ignore[no-untyped-def]
        self._delivered.pop(delivery_tag, None)

    qos.restore_unacked = guarded(qos.restore_unacked, forget_all)
    qos.ack = guarded(qos.ack, forget_one)
    qos.reject = guarded(qos.reject, forget_one)


def make_app(url: str) -> Celery:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"REDIS_URL must be a redis:// URL, got {url.split('@')[-1]!r}")
    vt = visibility_timeout()
    restore_interval = max(1, min(10, vt // 10))
    transport = {
        "visibility_timeout": vt,
        "unacked_restore_interval": restore_interval,
        "unacked_restore_throttle": 1,
        # A worker killed while restoring holds this mutex until it expires (default 5 min).
        "unacked_mutex_expire": max(5, min(60, vt // 4)),
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "health_check_interval": 25,
    }
    _survive_broker_restart()
    app = Celery("llm_dispatch", set_as_current=True)
    app.conf.update(
        broker_url=url,
        result_backend=url,
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": vt},
        visibility_timeout=vt,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_soft_shutdown_timeout=5.0,
        result_extended=False,
        result_expires=int(float(os.environ.get("DISPATCH_RESULT_EXPIRES", "86400"))),
        task_default_queue="dispatch.default",
        # Task events feed Flower. They cost Redis round trips on every task:
        # DISPATCH_TASK_EVENTS=0 turns them off (Flower then switches them on while it runs).
        worker_send_task_events=os.environ.get("DISPATCH_TASK_EVENTS", "1") != "0",
        worker_hijack_root_logger=False,
        timezone="UTC",
        imports=("workers.tasks", "workers.schedules"),
        # Beat (workers/schedules.py): RedBeat's Redis lock lets one beat run; a standby
        # takes over once the lock expires, so keep both the lock and the loop short.
        beat_scheduler="workers.schedules:DispatchScheduler",
        beat_max_loop_interval=float(os.environ.get("DISPATCH_BEAT_MAX_INTERVAL", "5")),
        redbeat_redis_url=url,
        redbeat_redis_options={"retry_period": 60, "socket_timeout": 30,
                               "socket_connect_timeout": 10, "health_check_interval": 25},
        redbeat_key_prefix=os.environ.get("DISPATCH_NAMESPACE", "dispatch") + ":redbeat:",
        redbeat_lock_timeout=int(os.environ.get("DISPATCH_BEAT_LOCK_TIMEOUT", "30")),
    )
    return app


app = make_app(redis_url(required=True) or "")
from workers import limits_check  # noqa: E402,F401 - every worker process checks its limits
