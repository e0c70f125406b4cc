"""ProviderClient and call() against a real local HTTP server (stdlib, in a thread)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dispatcher.config.models import ModelConfig, ProviderConfig
from workers.providers.adapters import adapter_for
from workers.providers.client import (
    ClientPool,
    ProviderClient,
    RawResponse,
    TransportFailure,
    call,
)
from workers.providers.outcomes import JobRejected, RateLimited, Success, TargetRejected, Transient

KEY = "test-key-123456"
COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong",
                                         "reasoning_content": "thinking"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class Handler(BaseHTTPRequestHandler):
    """Answers by the model name in the request: each scenario is one model id."""

    seen: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.seen.append({"path": self.path, "auth": self.headers.get("Authorization"),
                             "body": body})
        model = body.get("model")
        if model == "slow":
            time.sleep(1.0)
        if model == "ratelimited":
            error = {"message": "Rate limit reached ... Please try again in 5.289s.",
                     "type": "tokens", "code": "rate_limit_exceeded"}
            self._reply(429, {"error": error},
                        {"retry-after": "3", "x-ratelimit-remaining-tokens": "0",
                         "x-ratelimit-limit-tokens": "6000", "x-ratelimit-reset-tokens": "2.5s"})
        elif model == "broken":
            self._reply(500, {"error": {"message": "internal error", "type": "server_error"}})
        elif model == "echo-key":
            auth = self.headers.get("Authorization", "")
            self._reply(401, {"error": {"message": f"Incorrect API key provided: {auth}",
                                        "type": "invalid_request_error"}})
        elif model == "bad":
            self._reply(400, {"error": {"message": "'messages' : value must be an array"}})
        else:
            self._reply(200, COMPLETION, {"x-ratelimit-remaining-requests": "999",
                                          "x-ratelimit-limit-requests": "1000"})

    def _reply(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the timeout test hangs up on a sleeping handler: a broken pipe is expected


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def client() -> Iterator[ProviderClient]:
    c = ProviderClient("groq", concurrency=4, timeout_s=5.0)
    yield c
    c.close()


def body(model: str) -> dict[str, Any]:
    return adapter_for("groq").prepare(
        {"messages": [{"role": "user", "content": "ping"}]}, model, 16
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_success_sends_key_and_body(base_url: str, client: ProviderClient) -> None:
    Handler.seen.clear()
    outcome, latency, obs = call(adapter_for("groq"), client, base_url + "/", KEY, body("ok"))
    assert isinstance(outcome, Success)
    assert outcome.body["choices"][0]["message"]["reasoning"] == "thinking"
    assert outcome.usage == COMPLETION["usage"]
    assert 0 < latency < 5
    assert [(o.unit, o.per, o.remaining) for o in obs] == [("requests", "day", 999)]
    (req,) = Handler.seen
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == f"Bearer {KEY}"
    assert req["body"]["model"] == "ok" and req["body"]["max_tokens"] == 16


def test_raw_send(base_url: str, client: ProviderClient) -> None:
    raw = client.send(base_url, KEY, body("ok"))
    assert isinstance(raw, RawResponse) and raw.status == 200
    assert raw.headers["X-RateLimit-Remaining-Requests"] == "999"
    assert json.loads(raw.content)["choices"]
    assert KEY not in repr(raw) and KEY not in repr(client)


def test_no_key_sends_no_authorization(base_url: str, client: ProviderClient) -> None:
    Handler.seen.clear()
    outcome, _, _ = call(adapter_for("openai"), client, base_url, None, body("ok"))
    assert isinstance(outcome, Success)
    assert Handler.seen[0]["auth"] is None


def test_429_with_retry_after(base_url: str, client: ProviderClient) -> None:
    outcome, _, obs = call(adapter_for("groq"), client, base_url, KEY, body("ratelimited"))
    assert isinstance(outcome, RateLimited)
    assert (outcome.status, outcome.retry_after_s, outcome.scope) == (429, 3.0, "model")
    assert [(o.unit, o.remaining, o.reset_s) for o in obs] == [("tokens", 0, 2.5)]


def test_500_is_transient(base_url: str, client: ProviderClient) -> None:
    outcome, _, _ = call(adapter_for("nvidia"), client, base_url, KEY, body("broken"))
    assert isinstance(outcome, Transient) and outcome.status == 500


def test_400_is_job_rejected(base_url: str, client: ProviderClient) -> None:
    outcome, _, _ = call(adapter_for("mistral"), client, base_url, KEY, body("bad"))
    assert isinstance(outcome, JobRejected) and outcome.status == 400


def test_read_timeout_is_transient(base_url: str) -> None:
    short = ProviderClient("nvidia", concurrency=1, timeout_s=0.2)
    try:
        with pytest.raises(TransportFailure) as info:
            short.send(base_url, KEY, body("slow"))
        assert info.value.timeout and KEY not in str(info.value)
        assert info.value.__cause__ is None and info.value.__context__ is None
        outcome, latency, obs = call(adapter_for("nvidia"), short, base_url, KEY, body("slow"))
        assert isinstance(outcome, Transient) and outcome.status is None
        assert "Timeout" in outcome.message and 0.15 < latency < 1.0 and obs == []
    finally:
        short.close()


def test_connection_refused_is_transient(client: ProviderClient) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(TransportFailure) as info:
        client.send(url, KEY, body("ok"))
    assert not info.value.timeout
    outcome, _, _ = call(adapter_for("groq"), client, url, KEY, body("ok"))
    assert isinstance(outcome, Transient) and outcome.status is None
    assert "ConnectError" in outcome.message
    assert KEY not in repr(outcome) and KEY not in repr(info.value)


def test_key_echoed_by_upstream_is_scrubbed(base_url: str, client: ProviderClient) -> None:
    outcome, _, _ = call(adapter_for("openai"), client, base_url, KEY, body("echo-key"))
    assert isinstance(outcome, TargetRejected) and outcome.kind == "auth"
    assert KEY not in repr(outcome)
    assert "[REDACTED]" in outcome.message


def test_concurrent_calls_share_one_client(base_url: str, client: ProviderClient) -> None:
    results: list[Any] = []

    def work() -> None:
        results.append(call(adapter_for("groq"), client, base_url, KEY, body("ok"))[0])

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 12 and all(isinstance(r, Success) for r in results)


def test_client_pool_is_lazy_and_closes(base_url: str) -> None:
    pc = ProviderConfig(base_url=base_url, api_key_env="GROQ_API_KEY", concurrency=2,
                        timeout_s=3.0, models=[ModelConfig(id="ok")])
    with ClientPool({"groq": pc, "nvidia": pc}) as pool:
        a = pool.get("groq")
        assert pool.get("groq") is a and pool.get("nvidia") is not a
        assert a.timeout_s == 3.0
        outcome, _, _ = call(adapter_for("groq"), a, base_url, KEY, body("ok"))
        assert isinstance(outcome, Success)
    with pytest.raises(KeyError):
        pool.get("unknown")
