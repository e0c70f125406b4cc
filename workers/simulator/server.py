"""One local HTTP server that stands in for every configured provider.

    POST /{provider}/v1/chat/completions     GET /{provider}/v1/models
    GET /{provider}/v1/key  (OpenRouter dialect: the free requests of the day)
    GET /_sim/stats   POST /_sim/reset   POST /_sim/inject   POST /_sim/latency
    POST /_sim/drop   ({"provider", "model", "restore": false}: a model retired upstream)

Standard library only (ThreadingHTTPServer, HTTP/1.1 keep-alive, daemon threads): a
sleeping thread per in-flight request is cheap, so ~100 concurrent requests with
simulated latency fit easily on a small machine.

    >>> with Simulator(load_config("config", simulate=True)) as sim:   # doctest: +SKIP
    ...     httpx.post(f"{sim.base_url('groq')}/chat/completions", ...)
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dispatcher.config import Config
from workers.simulator.accounting import Clock, Ledger, Units
from workers.simulator.chat import (
    ChatError,
    completion,
    parse_request,
    plan_usage,
    sse_answer,
)
from workers.simulator.dialects import Answer, Dialect, dialect_for, openai_error
from workers.simulator.faults import KINDS, Fault, FaultQueue, render

COUNTERS = ("received", "ok", "rate_limited", "over_limit", "errors_injected", "rejected",
            "tokens", "neurons")


def _not_found(message: str, code: str = "model_not_found") -> Answer:
    return Answer(404, openai_error(message, "invalid_request_error", code))


class Simulator:
    """The provider simulator: enforces each provider's configured limits and counts
    every request that arrives over one (the quota promise checker)."""

    def __init__(
        self,
        config: Config,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: tuple[float, float] = (0.0, 0.0),
        seed: int | None = None,
        enforce: bool = True,
        reply_tokens: int = 32,
        timeout_hold_s: float = 300.0,
        tolerance_s: float = 0.05,
        clock: Clock = time.time,
    ):
        self.config = config
        self.host, self.port = host, port
        self.enforce = enforce
        self.reply_tokens = reply_tokens
        self.timeout_hold_s = timeout_hold_s
        self.ledger = Ledger(config, tolerance_s, clock)
        self.faults = FaultQueue()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._latency = (0.0, 0.0)
        self.set_latency(*latency)
        self._targets = {t.key: t for t in config.targets()}
        self._stats: dict[str, Counter[str]] = {}
        self._totals: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._max_in_flight: Counter[str] = Counter()
        """Chat requests being answered, now and at most at once, per target and "*"."""
        self._dropped: set[str] = set()
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> Simulator:
        """Listen and serve in a background thread; returns self."""
        self._stop.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release held and idle connections."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def base_url(self, provider: str) -> str:
        """What the dispatcher uses as ``base_url`` for ``provider`` in simulate mode."""
        return f"{self.url}/{provider}/v1"

    # -- control --------------------------------------------------------------------
    def set_latency(self, min_s: float, max_s: float | None = None) -> None:
        """Every chat answer waits uniform(min_s, max_s) seconds before it is sent."""
        max_s = min_s if max_s is None else max_s
        if min_s < 0 or max_s < min_s:
            raise ValueError("latency must satisfy 0 <= min <= max")
        with self._lock:
            self._latency = (float(min_s), float(max_s))

    def inject(self, provider: str, kind: str, count: int = 1, model: str | None = None,
               retry_after: float | None = None) -> None:
        """Queue ``count`` failures of ``kind`` for the next matching requests."""
        pc = self.config.providers.get(provider)
        if pc is None:
            raise ValueError(f"unknown provider {provider!r}")
        if model is not None and pc.model(model) is None:
            raise ValueError(f"unknown model {model!r} of provider {provider!r}")
        self.faults.add(provider, Fault(kind, model, retry_after), count)

    def drop_model(self, provider: str, model: str, restore: bool = False) -> None:
        """Retire a configured model upstream: no longer listed by ``GET /models``, and
        answered 404 ``model_not_found`` like a decommissioned one (``restore`` undoes it)."""
        pc = self.config.providers.get(provider)
        if pc is None:
            raise ValueError(f"unknown provider {provider!r}")
        if pc.model(model) is None:
            raise ValueError(f"unknown model {model!r} of provider {provider!r}")
        with self._lock:
            (self._dropped.discard if restore else self._dropped.add)(f"{provider}/{model}")

    def dropped(self) -> list[str]:
        """The targets dropped so far (``provider/model``)."""
        with self._lock:
            return sorted(self._dropped)

    def listed(self, provider: str) -> list[str]:
        """The model ids ``GET /{provider}/v1/models`` lists: configured minus dropped."""
        pc = self.config.providers[provider]
        with self._lock:
            return [m.id for m in pc.models if f"{provider}/{m.id}" not in self._dropped]

    def reset(self) -> None:
        """Forget all counters, quota windows and pending faults."""
        with self._lock:
            self._stats.clear()
            self._totals.clear()
            self._max_in_flight = Counter(self._in_flight)
        self.ledger.reset()
        self.faults.clear()

    def stats(self) -> dict[str, Any]:
        """Counters per target, per provider, per limit, and totals (JSON-able)."""
        with self._lock:
            targets = {k: {c: _num(self._stats.get(k, Counter())[c]) for c in COUNTERS}
                       for k in self._targets}
            totals = {c: _num(self._totals[c]) for c in COUNTERS}
            for key, counts in (*targets.items(), ("*", totals)):
                counts["in_flight"] = self._in_flight[key]
                counts["max_in_flight"] = self._max_in_flight[key]
            latency = self._latency
        providers: dict[str, dict[str, float]] = {}
        for key, counts in targets.items():  # in-flight figures are per target and total
            agg = providers.setdefault(key.partition("/")[0], dict.fromkeys(COUNTERS, 0))
            for c in COUNTERS:
                agg[c] = _num(agg[c] + counts[c])
        return {
            "url": self.url,
            "enforce": self.enforce,
            "latency": {"min_s": latency[0], "max_s": latency[1]},
            "targets": targets,
            "providers": providers,
            "limits": self.ledger.stats(),
            "totals": totals,
            "pending_faults": self.faults.pending(),
            "dropped": self.dropped(),
        }

    def _count(self, target: str | None, **inc: float) -> None:
        with self._lock:
            self._totals.update(inc)
            if target is not None:
                self._stats.setdefault(target, Counter()).update(inc)

    # -- requests -------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Answer:
        """Answer one HTTP request (the server calls this; latency is applied here)."""
        parts = path.split("?", 1)[0].strip("/").split("/")
        if parts[0] == "_sim":
            return self._admin(method, "/".join(parts[1:]), raw)
        provider, rest = parts[0], "/".join(parts[1:])
        pc = self.config.providers.get(provider)
        route = (method, rest)
        if route not in (("POST", "v1/chat/completions"), ("GET", "v1/models"), ("GET", "v1/key")):
            return _not_found(f"Unknown request URL: {method} {path}", "unknown_url")
        if pc is None:
            self._count(None, received=1, rejected=1)
            return _not_found(f"unknown provider {provider!r}", "provider_not_found")
        dialect = dialect_for(pc.dialect)
        if not headers.get("authorization", "").lower().startswith("bearer "):
            self._count(None, received=1, rejected=1)
            return dialect.error("auth", "Invalid API Key: no Authorization: Bearer header")
        if route == ("GET", "v1/key"):
            return self._key(provider)
        if method == "GET":
            listed = set(self.listed(provider))
            return Answer(200, {"object": "list", "data": [
                {"id": m.id, "object": "model", "created": 0, "owned_by": provider,
                 "context_window": m.context_window, "pricing": {"prompt": "0",
                                                                 "completion": "0"}}
                for m in pc.models if m.id in listed]})
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._count(None, received=1, rejected=1)
            return dialect.error("bad_request", "request body is not valid JSON")
        model_id = body.get("model") if isinstance(body, dict) else None
        model = pc.model(model_id) if isinstance(model_id, str) else None
        if model is None:
            self._count(None, received=1, rejected=1)
            return _not_found(f"The model `{model_id}` does not exist or you do not have "
                              "access to it.")
        target = f"{provider}/{model.id}"
        self._count(target, received=1)
        if target in self.dropped():
            self._count(target, rejected=1)
            return _not_found(f"The model `{model.id}` has been decommissioned and is no "
                              "longer supported.", "model_decommissioned")
        request_id = uuid.uuid4().hex[:24]
        self._flight(target, 1)
        try:
            answer = self._chat(target, provider, model.id, body, dialect, request_id)
            if not answer.hold:
                answer.headers.setdefault("x-request-id", f"req_{request_id}")
            self._sleep_latency()
            return answer
        finally:  # before a byte of the answer is written: a client that has it is out
            self._flight(target, -1)

    def _flight(self, target: str, delta: int) -> None:
        """Count a chat request in (1) or out (-1) of flight, keeping the highest count
        (per target and in total: "how many calls at once", the concurrency checker)."""
        with self._lock:
            for key in (target, "*"):
                self._in_flight[key] += delta
                if self._in_flight[key] > self._max_in_flight[key]:
                    self._max_in_flight[key] = self._in_flight[key]

    def _chat(self, target: str, provider: str, model_id: str, body: dict[str, Any],
              dialect: Dialect, request_id: str) -> Answer:
        fault = self.faults.take(provider, model_id)
        if fault is not None:
            self._count(target, errors_injected=1)
            return render(fault, dialect, target, model_id, self.ledger)
        model = self._targets[target].model
        try:
            request = parse_request(body, model, dialect)
        except ChatError as exc:
            self._count(target, rejected=1)
            return dialect.error(exc.kind, exc.message, exc.param)
        usage = plan_usage(request, self.reply_tokens)
        neurons = usage.neurons(model)
        hits = self.ledger.admit(target, Units(usage.total_tokens, neurons), self.enforce)
        if hits:
            self._count(target, over_limit=1)
            if self.enforce:
                self._count(target, rate_limited=1)
                worst = max(hits, key=lambda h: float("inf") if h.retry_after is None
                            else h.retry_after)
                return dialect.rate_limited(worst, model_id, self.ledger.views(target))
        self._count(target, ok=1, tokens=usage.total_tokens, neurons=neurons)
        answer = Answer(200, completion(request_id, provider, model, request, usage, dialect))
        if body.get("stream") is True:
            options = body.get("stream_options")
            include = isinstance(options, dict) and options.get("include_usage") is True
            answer = Answer(200, sse_answer(answer.body, include),
                            {"content-type": "text/event-stream"})
        answer.headers.update(dialect.success_headers(self.ledger.views(target)))
        return answer

    def _key(self, provider: str) -> Answer:
        """OpenRouter's ``GET /api/v1/key``: the provider's requests/day limit and what this
        simulator received (the day being its lifetime, or since the last reset)."""
        pc = self.config.providers[provider]
        if pc.dialect != "openrouter":
            return _not_found(f"Unknown request URL: GET /{provider}/v1/key", "unknown_url")
        daily = [lim.limit for lim in pc.limits
                 if lim.unit.value == "requests" and lim.per.value == "day"]
        limit = min(daily) if daily else 50
        with self._lock:
            used = sum(int(c["received"]) for key, c in self._stats.items()
                       if key.partition("/")[0] == provider)
        return Answer(200, {"data": {"label": "simulated", "is_free_tier": True,
                                     "free_model_daily_requests": {
                                         "used": used, "limit": limit,
                                         "remaining": max(0, limit - used)}}})

    def _sleep_latency(self) -> None:
        with self._lock:
            low, high = self._latency
            delay = self._rng.uniform(low, high) if high > 0 else 0.0
        if delay > 0:
            self._stop.wait(delay)

    def hold(self) -> None:
        """A "timeout" fault: keep the connection silent, then drop it."""
        self._stop.wait(self.timeout_hold_s)

    def _admin(self, method: str, what: str, raw: bytes) -> Answer:
        try:
            data = json.loads(raw) if raw else {}
            if method == "GET" and what == "stats":
                return Answer(200, self.stats())
            if method == "POST" and what == "reset":
                self.reset()
                return Answer(200, {"ok": True})
            if method == "POST" and what == "inject":
                self.inject(data["provider"], data["kind"], int(data.get("count", 1)),
                            data.get("model"), data.get("retry_after"))
                return Answer(200, {"ok": True, "pending": self.faults.pending()})
            if method == "POST" and what == "drop":
                self.drop_model(data["provider"], data["model"], bool(data.get("restore")))
                return Answer(200, {"ok": True, "dropped": self.dropped()})
            if method == "POST" and what == "latency":
                low = float(data.get("min_ms", 0)) / 1000
                self.set_latency(low, float(data.get("max_ms", low * 1000)) / 1000)
                return Answer(200, {"ok": True, "min_s": self._latency[0],
                                    "max_s": self._latency[1]})
        except (ValueError, KeyError, TypeError) as exc:
            hint = f" (kinds: {', '.join(KINDS)})" if "kind" in str(exc) else ""
            return Answer(400, openai_error(f"bad admin request: {exc}{hint}",
                                            "invalid_request_error", None))
        return _not_found(f"unknown admin endpoint {method} /_sim/{what}", "unknown_url")


def _num(value: float) -> float:
    """Counters are ints except neurons; keep JSON tidy."""
    return int(value) if float(value).is_integer() else round(value, 3)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 300  # an idle keep-alive connection frees its thread after this long
    disable_nagle_algorithm = True  # headers and body are two writes: without it, the
    # body waits for the client's delayed ACK (~40 ms added to every answer's latency)
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by design
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        raw = self._body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        sim = self.server.sim
        answer = sim.handle(self.command, self.path, headers, raw)
        if answer.hold:
            sim.hold()
            self.close_connection = True
            return
        if isinstance(answer.body, bytes):
            payload = answer.body
        else:
            payload = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        out = {"content-type": "application/json", **answer.headers}
        for name, value in out.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        try:
            self._serve()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: Simulator):
        self.sim = sim
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake threads blocked on idle keep-alive sockets so they exit."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
