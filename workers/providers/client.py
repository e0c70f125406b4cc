"""Pooled HTTP clients, one per provider, and :func:`call`, one classified upstream call.

One ``httpx.Client`` per provider keeps connections alive between calls (TLS setup is
slow next to a short completion), with room for every call the job store may admit at
once (``concurrency`` per target): a call never holds quota while it waits for a
connection.
httpx clients are safe to share between the threads of a pool.

The key is passed per call and never stored; transport errors are re-raised as
:class:`TransportFailure` with redacted text and without the httpx exception attached
(its ``request`` carries the Authorization header).

    >>> pool = ClientPool({})              # usually ClientPool(config.providers)
    >>> pool.close()
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from dispatcher.config.models import ProviderConfig
from dispatcher.config.secrets import redact
from workers.providers.adapters import Adapter
from workers.providers.outcomes import Observation, Outcome, Transient

CONNECT_TIMEOUT_S = 10.0
USER_AGENT = "llm-dispatch/0.1"


def scrub(text: str, api_key: str | None) -> str:
    """``redact`` plus this call's own key, which may not look like a key at all."""
    if api_key and len(api_key) >= 6:
        text = text.replace(api_key, "[REDACTED]")
    return redact(text)


@dataclass(frozen=True)
class RawResponse:
    """An HTTP answer as received, before classification.

        >>> RawResponse(200, httpx.Headers(), b"{}", 0.2).status
        200
    """

    status: int
    headers: httpx.Headers
    content: bytes
    latency_s: float


class TransportFailure(Exception):
    """No HTTP answer: timeout, refused or dropped connection. The text is redacted.

        >>> str(TransportFailure("groq: timed out", 1.5, timeout=True))
        'groq: timed out'
    """

    def __init__(self, message: str, latency_s: float = 0.0, timeout: bool = False):
        self.message = redact(message)
        self.latency_s = latency_s
        self.timeout = timeout
        super().__init__(self.message)


def _trace(on_sent: Callable[[], None]) -> dict[str, Any]:
    """httpcore's per-request trace hook, reduced to "the request body is on the wire"."""

    def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_body.complete"):
            on_sent()

    return {"trace": trace}


def pool_size(pc: ProviderConfig) -> int:
    """Connections one process keeps for a provider: ``concurrency`` for each of its models.

        >>> from dispatcher.config.models import ModelConfig
        >>> pool_size(ProviderConfig(base_url="x", api_key_env="K", concurrency=3,
        ...                          models=[ModelConfig(id="a"), ModelConfig(id="b")]))
        6
    """
    return pc.concurrency * max(1, len(pc.models))


class ProviderClient:
    """A keep-alive connection pool to one provider; thread-safe.

        >>> c = ProviderClient("groq", concurrency=4, timeout_s=60)
        >>> # c.send("https://api.groq.com/openai/v1", key, body) -> RawResponse
        >>> c.close()
    """

    def __init__(
        self,
        name: str,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ):
        self.name = name
        self.timeout_s = timeout_s
        timeout = httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
        limits = httpx.Limits(
            max_connections=concurrency,
            max_keepalive_connections=concurrency,
            keepalive_expiry=30.0,
        )
        self._http = httpx.Client(timeout=timeout, limits=limits, follow_redirects=False)

    @classmethod
    def from_config(cls, name: str, pc: ProviderConfig) -> ProviderClient:
        """Connections for every call that may be in flight: the job store admits
        ``concurrency`` calls per *target*, so one process may call all of a provider's
        models at once. A smaller pool would make a call that holds its quota wait for a
        connection, and reach the upstream late."""
        return cls(name, concurrency=pool_size(pc), timeout_s=pc.timeout_s)

    def send(self, url_base: str, api_key: str | None, body: dict[str, Any],
             on_sent: Callable[[], None] | None = None) -> RawResponse:
        """POST ``body`` to ``{url_base}/chat/completions``; raise TransportFailure when
        no HTTP answer arrives (any status, even 5xx, is returned as received).

        ``on_sent`` runs the moment the request is fully written (before the answer)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": USER_AGENT}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        url = url_base.rstrip("/") + "/chat/completions"
        start = time.monotonic()
        error: str | None = None
        try:
            resp = self._http.post(url, content=json.dumps(body).encode(), headers=headers,
                                   extensions=_trace(on_sent) if on_sent else None)
        except httpx.TimeoutException as exc:
            error, timed_out = f"{type(exc).__name__} after {time.monotonic() - start:.1f}s", True
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error, timed_out = f"{type(exc).__name__}: {exc}", False
        if error is not None:  # raised outside `except`: no chained httpx exception
            message = scrub(f"{self.name}: {error}", api_key)
            raise TransportFailure(message, time.monotonic() - start, timeout=timed_out)
        return RawResponse(resp.status_code, resp.headers, resp.content, time.monotonic() - start)

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"ProviderClient({self.name!r}, timeout_s={self.timeout_s})"


class ClientPool:
    """One lazily created :class:`ProviderClient` per provider name; close them together.

        >>> with ClientPool(config.providers) as pool:         # doctest: +SKIP
        ...     outcome, latency, obs = call(adapter, pool.get("groq"), base, key, body)
    """

    def __init__(self, providers: Mapping[str, ProviderConfig]):
        self._providers = providers
        self._clients: dict[str, ProviderClient] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> ProviderClient:
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                client = ProviderClient.from_config(name, self._providers[name])
                self._clients[name] = client
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def call(
    adapter: Adapter,
    client: ProviderClient,
    base_url: str,
    api_key: str | None,
    body: dict[str, Any],
    on_sent: Callable[[], None] | None = None,
) -> tuple[Outcome, float, list[Observation]]:
    """Send a prepared ``body`` and classify the answer: ``(outcome, latency_s,
    observations)``. Never raises for upstream trouble; no answer is a Transient."""
    try:
        raw = client.send(base_url, api_key, body, on_sent)
    except TransportFailure as failure:
        return Transient(None, None, failure.message), failure.latency_s, []
    content = raw.content
    if api_key and len(api_key) >= 6:  # some providers echo (part of) the key in errors
        content = content.replace(api_key.encode(), b"[REDACTED]")
    outcome = adapter.classify(raw.status, raw.headers, content)
    return outcome, raw.latency_s, adapter.observations(raw.status, raw.headers)
