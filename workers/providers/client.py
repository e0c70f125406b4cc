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
from collections.abc import Callable, Iterable, Iterator, Mapping
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
             on_sent: Callable[[], None] | None = None,
             on_chunk: Callable[[dict[str, Any]], None] | None = None) -> RawResponse:
        """POST ``body`` to ``{url_base}/chat/completions``; raise TransportFailure when
        no HTTP answer arrives (any status, even 5xx, is returned as received).

        ``on_sent`` runs the moment the request is fully written (before the answer).
        ``on_chunk`` (for ``"stream": true``): each Server-Sent Event's JSON goes to it as
        it arrives, and ``content`` is the whole answer put back together as one
        ``chat.completion`` (:func:`assemble_chunks`), classified like any other answer;
        a non-SSE answer (an error) is returned whole."""
        headers = {"Content-Type": "application/json",
                   "Accept": "application/json" if on_chunk is None else "text/event-stream",
                   "User-Agent": USER_AGENT}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        url = url_base.rstrip("/") + "/chat/completions"
        start = time.monotonic()
        error: str | None = None
        extensions = _trace(on_sent) if on_sent else None
        try:
            if on_chunk is None:
                resp = self._http.post(url, content=json.dumps(body).encode(), headers=headers,
                                       extensions=extensions)
                content = resp.content
            else:
                resp, content = self._streamed(url, headers, body, extensions, on_chunk)
        except httpx.TimeoutException as exc:
            error, timed_out = f"{type(exc).__name__} after {time.monotonic() - start:.1f}s", True
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error, timed_out = f"{type(exc).__name__}: {exc}", False
        if error is not None:  # raised outside `except`: no chained httpx exception
            message = scrub(f"{self.name}: {error}", api_key)
            raise TransportFailure(message, time.monotonic() - start, timeout=timed_out)
        return RawResponse(resp.status_code, resp.headers, content, time.monotonic() - start)

    def _streamed(self, url: str, headers: dict[str, str], body: dict[str, Any],
                  extensions: dict[str, Any] | None,
                  on_chunk: Callable[[dict[str, Any]], None]) -> tuple[httpx.Response, bytes]:
        with self._http.stream("POST", url, content=json.dumps(body).encode(), headers=headers,
                               extensions=extensions) as resp:
            ctype = resp.headers.get("content-type", "")
            if not (200 <= resp.status_code < 300 and ctype.startswith("text/event-stream")):
                return resp, resp.read()
            chunks: list[dict[str, Any]] = []
            for chunk in sse_events(resp.iter_lines()):
                chunks.append(chunk)
                on_chunk(chunk)
            return resp, json.dumps(assemble_chunks(chunks)).encode()

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


def sse_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects of ``data:`` lines, up to ``data: [DONE]``.

        >>> list(sse_events(['data: {"a": 1}', "", ": keep-alive", "data: [DONE]"]))
        [{'a': 1}]
    """
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            obj = json.loads(data)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj


def assemble_chunks(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Streamed ``chat.completion.chunk`` objects put back together as one completion:
    content (and reasoning) concatenated per choice, the last finish_reason, the usage
    of the chunk that carried it (``None`` when none did); an ``error`` chunk is kept.

        >>> assemble_chunks([{"id": "c", "model": "m", "choices": [{"index": 0, "delta":
        ...     {"role": "assistant", "content": "Hi"}}]}, {"choices": [{"index": 0,
        ...     "delta": {"content": "!"}, "finish_reason": "stop"}]}])["choices"][0]["message"]
        {'role': 'assistant', 'content': 'Hi!'}
    """
    out: dict[str, Any] = {"object": "chat.completion", "choices": [], "usage": None}
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for key in ("id", "created", "model", "system_fingerprint"):
            if key in chunk and key not in out:
                out[key] = chunk[key]
        if chunk.get("error") is not None:
            out["error"] = chunk["error"]
        if isinstance(chunk.get("usage"), dict):
            out["usage"] = chunk["usage"]
        for c in chunk.get("choices") or []:
            if not isinstance(c, dict):
                continue
            slot = choices.setdefault(int(c.get("index") or 0), {
                "index": int(c.get("index") or 0), "message": {"role": "assistant"},
                "finish_reason": None})
            delta = c.get("delta") or {}
            for field in ("content", "reasoning", "reasoning_content"):
                if isinstance(delta.get(field), str):
                    slot["message"][field] = slot["message"].get(field, "") + delta[field]
            if delta.get("tool_calls"):
                slot["message"].setdefault("tool_calls", []).extend(delta["tool_calls"])
            if c.get("finish_reason"):
                slot["finish_reason"] = c["finish_reason"]
    out["choices"] = [choices[i] for i in sorted(choices)]
    if out["usage"] is None:
        del out["usage"]
    return out


def call_stream(
    adapter: Adapter,
    client: ProviderClient,
    base_url: str,
    api_key: str | None,
    body: dict[str, Any],
    on_chunk: Callable[[dict[str, Any]], None],
    on_sent: Callable[[], None] | None = None,
) -> tuple[Outcome, float, list[Observation]]:
    """:func:`call` for a streamed answer: chunks go to ``on_chunk`` as they arrive; the
    outcome is the assembled answer, classified the same way."""
    try:
        raw = client.send(base_url, api_key, body, on_sent, on_chunk)
    except TransportFailure as failure:
        return Transient(None, None, failure.message), failure.latency_s, []
    return _classified(adapter, raw, api_key)


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
    return _classified(adapter, raw, api_key)


def _classified(adapter: Adapter, raw: RawResponse,
                api_key: str | None) -> tuple[Outcome, float, list[Observation]]:
    content = raw.content
    if api_key and len(api_key) >= 6:  # some providers echo (part of) the key in errors
        content = content.replace(api_key.encode(), b"[REDACTED]")
    outcome = adapter.classify(raw.status, raw.headers, content)
    return outcome, raw.latency_s, adapter.observations(raw.status, raw.headers)
