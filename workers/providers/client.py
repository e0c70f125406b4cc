"""Pooled HTTP clients, one per provider, and :func:`call`, one classified upstream call.

One :class:`ProviderClient` per provider keeps connections alive between calls (TLS setup
is slow next to a short completion), with room for every call the job store may admit at
once (``concurrency`` per target): a call never holds quota while it waits for a
connection. Clients are safe to share between the threads of a pool.

It speaks to ``httpcore`` (httpx's own transport) directly: every call of every worker,
of the gateway and of ``providers --test`` goes through here, and httpx's client layer
(URL merging, cookies, auth and redirect hooks, none of which an API call needs) cost
about as much CPU as the HTTP exchange itself (``docs/benchmarks.md``, the gateway). What
httpx's client gave that a user may rely on is kept: the same CA bundle
(``httpx.create_ssl_context``: certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), proxies
from ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` with ``NO_PROXY``, TCP_NODELAY, and
gzip/deflate answers decoded (none is asked for).

The key is passed per call and never stored; transport errors are re-raised as
:class:`TransportFailure` with redacted text and without the transport's exception attached.

    >>> pool = ClientPool({})              # usually ClientPool(config.providers)
    >>> pool.close()
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from dispatcher.config.models import ProviderConfig
from dispatcher.config.secrets import redact
from workers.providers.adapters import Adapter
from workers.providers.outcomes import Observation, Outcome, Transient

CONNECT_TIMEOUT_S = 10.0
USER_AGENT = "llm-dispatch/0.1"
_TRANSPORT_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError,
                     httpcore.UnsupportedProtocol, zlib.error)
"""No usable answer from the other side (``httpcore.TimeoutException`` is told apart;
httpcore maps socket and TLS errors to these); a body that does not decompress as
labelled is ``zlib.error``. Nothing broader: an exception raised by ``on_chunk`` (the
gateway's client went away) is not the upstream's failure and propagates as raised."""


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


def _trace(on_sent: Callable[[], None]) -> Callable[[str, dict[str, Any]], None]:
    """httpcore's per-request trace hook, reduced to "the request body is on the wire"."""

    def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_body.complete"):
            on_sent()

    return trace


def pool_size(pc: ProviderConfig) -> int:
    """Connections one process keeps for a provider: ``concurrency`` for each of its models.

        >>> from dispatcher.config.models import ModelConfig
        >>> pool_size(ProviderConfig(base_url="x", api_key_env="K", concurrency=3,
        ...                          models=[ModelConfig(id="a"), ModelConfig(id="b")]))
        6
    """
    return pc.concurrency * max(1, len(pc.models))


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``ALL_PROXY``, lower case too), unless ``NO_PROXY`` exempts its host; the rules of
    the standard library, as httpx applies them.

        >>> import os; os.environ.pop("HTTPS_PROXY", None) and None
        >>> proxy_for("https://api.groq.com/openai/v1") is None or True
        True
    """
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or (parts.hostname and urllib.request.proxy_bypass(parts.hostname)):
        return None
    return proxy if "://" in proxy else "http://" + proxy


def _proxy(url: str) -> httpcore.Proxy:
    """``httpcore.Proxy`` for a proxy URL, credentials taken out of it into ``auth``."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return httpcore.Proxy(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    bare = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    auth = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    return httpcore.Proxy(bare, auth=auth)


class _Decoder:
    """Undo a ``gzip``/``deflate`` Content-Encoding (none is asked for; some servers send
    it anyway); anything else passes through as received."""

    def __init__(self, encoding: str):
        encoding = encoding.strip().lower()
        self._z = (zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in ("gzip", "deflate")
                   else None)

    def __call__(self, data: bytes) -> bytes:
        return data if self._z is None else self._z.decompress(data)

    def flush(self) -> bytes:
        return b"" if self._z is None else self._z.flush()


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The lines of a byte stream (``\\n`` or ``\\r\\n`` endings, split anywhere across
    chunks), decoded as UTF-8.

        >>> list(_lines([b"data: 1\\r", b"\\nda", b"ta: 2\\n\\n", b"x"]))
        ['data: 1', 'data: 2', '', 'x']
    """
    buffer = b""
    for chunk in chunks:
        *complete, buffer = (buffer + chunk).split(b"\n")
        for line in complete:
            yield line.removesuffix(b"\r").decode("utf-8", "replace")
    if buffer:
        yield buffer.removesuffix(b"\r").decode("utf-8", "replace")


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
        self._size = concurrency
        self._timeout = {"connect": min(connect_timeout_s, timeout_s), "read": timeout_s,
                         "write": timeout_s, "pool": timeout_s}
        self._ssl = httpx.create_ssl_context()
        self._pools: dict[str | None, httpcore.ConnectionPool] = {}
        self._routes: dict[str, tuple[httpcore.URL, httpcore.ConnectionPool]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, name: str, pc: ProviderConfig) -> ProviderClient:
        """Connections for every call that may be in flight: the job store admits
        ``concurrency`` calls per *target*, so one process may call all of a provider's
        models at once. A smaller pool would make a call that holds its quota wait for a
        connection, and reach the upstream late."""
        return cls(name, concurrency=pool_size(pc), timeout_s=pc.timeout_s)

    def _route(self, url_base: str) -> tuple[httpcore.URL, httpcore.ConnectionPool]:
        """The request URL and the pool (direct, or through the environment's proxy) for a
        base URL; worked out once per base URL. ValueError: not a usable URL."""
        route = self._routes.get(url_base)
        if route is None:
            url = url_base.rstrip("/") + "/chat/completions"
            parsed = httpcore.URL(url)
            if parsed.scheme not in (b"http", b"https") or not parsed.host:
                raise ValueError(f"not an http(s) URL: {url_base!r}")
            proxy = proxy_for(url)
            with self._lock:
                pool = self._pools.get(proxy)
                if pool is None:
                    pool = httpcore.ConnectionPool(
                        ssl_context=self._ssl, proxy=_proxy(proxy) if proxy else None,
                        max_connections=self._size, max_keepalive_connections=self._size,
                        keepalive_expiry=30.0)
                    self._pools[proxy] = pool
                route = self._routes[url_base] = (parsed, pool)
        return route

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
        headers = [(b"Content-Type", b"application/json"),
                   (b"Accept", b"application/json" if on_chunk is None else b"text/event-stream"),
                   (b"User-Agent", USER_AGENT.encode())]
        if api_key:
            headers.append((b"Authorization", b"Bearer " + api_key.encode()))
        extensions: dict[str, Any] = {"timeout": self._timeout}
        if on_sent is not None:
            extensions["trace"] = _trace(on_sent)
        start = time.monotonic()
        error: str | None = None
        try:
            url, pool = self._route(url_base)
        except ValueError as exc:
            raise TransportFailure(scrub(f"{self.name}: invalid URL: {exc}", api_key)) from None
        try:
            content = json.dumps(body).encode()
            if on_chunk is None:
                resp = pool.request(b"POST", url, headers=headers, content=content,
                                    extensions=extensions)
                status, fields = resp.status, httpx.Headers(resp.headers)
                out = _decoded(fields, resp.content)
            else:
                status, fields, out = self._streamed(pool, url, headers, content, extensions,
                                                     on_chunk)
        except httpcore.TimeoutException as exc:
            error, timed_out = f"{type(exc).__name__} after {time.monotonic() - start:.1f}s", True
        except _TRANSPORT_ERRORS as exc:
            error, timed_out = f"{type(exc).__name__}: {exc}", False
        if error is not None:  # raised outside `except`: no chained transport exception
            message = scrub(f"{self.name}: {error}", api_key)
            raise TransportFailure(message, time.monotonic() - start, timeout=timed_out)
        return RawResponse(status, fields, out, time.monotonic() - start)

    @staticmethod
    def _streamed(pool: httpcore.ConnectionPool, url: httpcore.URL,
                  headers: list[tuple[bytes, bytes]], content: bytes, extensions: dict[str, Any],
                  on_chunk: Callable[[dict[str, Any]], None]) -> tuple[int, httpx.Headers, bytes]:
        with pool.stream(b"POST", url, headers=headers, content=content,
                         extensions=extensions) as resp:
            fields = httpx.Headers(resp.headers)
            ctype = fields.get("content-type", "")
            if not (200 <= resp.status < 300 and ctype.startswith("text/event-stream")):
                return resp.status, fields, _decoded(fields, resp.read())
            decode = _Decoder(fields.get("content-encoding", ""))
            chunks: list[dict[str, Any]] = []
            raw = (decode(part) for part in resp.iter_stream())
            for chunk in sse_events(_lines(raw)):
                chunks.append(chunk)
                on_chunk(chunk)
            return resp.status, fields, json.dumps(assemble_chunks(chunks)).encode()

    def close(self) -> None:
        with self._lock:
            pools, self._pools, self._routes = list(self._pools.values()), {}, {}
        for pool in pools:
            pool.close()

    def __repr__(self) -> str:
        return f"ProviderClient({self.name!r}, timeout_s={self.timeout_s})"


def _decoded(headers: httpx.Headers, content: bytes) -> bytes:
    """The body as sent before any Content-Encoding (see :class:`_Decoder`)."""
    decode = _Decoder(headers.get("content-encoding", ""))
    try:
        return decode(content) + decode.flush()
    except zlib.error:
        return content  # mislabelled: classified as received (garbage is garbage)


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
