"""The one place a process gets its Redis connection."""

from __future__ import annotations

import os

import redis


class RedisNotConfigured(RuntimeError):
    """REDIS_URL is unset for a command that needs a running cluster."""


def redis_url(required: bool = True) -> str | None:
    url = os.environ.get("REDIS_URL")
    if not url and required:
        raise RedisNotConfigured(
            "REDIS_URL is needed (e.g. redis://127.0.0.1:6379/0); with it unset, `dispatch` "
            "commands use the embedded Redis of the state directory (.dispatch/)"
        )
    return url


def redis_client(url: str | None = None) -> redis.Redis:
    """A client with short timeouts: a dead Redis must fail fast (and fail closed)."""
    return redis.Redis.from_url(
        url or redis_url(),
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=10,
        health_check_interval=30,
    )
