"""The upstream client's transport duties, against real local servers: what httpx's client
layer used to give (proxies from the environment, NO_PROXY, compressed answers) and SSE
lines split anywhere across reads."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.providers.adapters import adapter_for
from workers.providers.client import ProviderClient, TransportFailure, _lines, call, proxy_for
from workers.providers.outcomes import Success

COMPLETION = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


class Handler(BaseHTTPRequestHandler):
    """Records the request line; answers gzip when the model says so, or as SSE written in
    awkward pieces (a CRLF split between two writes)."""

    seen: list[str] = []
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        Handler.seen.append(self.requestline)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            events = [{"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {
                "role": "assistant", "content": "po"}}]},
                {"choices": [{"index": 0, "delta": {"content": "ng"}, "finish_reason": "stop"}],
                 "usage": COMPLETION["usage"]}]
            raw = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)
            raw += b"data: [DONE]\r\n\r\n"
            for piece in (raw[:7], raw[7:40], raw[40:41], raw[41:]):  # splits inside a line
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                time.sleep(0.01)
            self.wfile.write(b"0\r\n\r\n")
            return
        data = json.dumps(COMPLETION).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if body.get("model") == "gzipped":
            data = gzip.compress(data)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                 "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "ping"}], **extra}


def call_once(base_url: str, model: str) -> Any:
    """One classified call through a fresh client (its proxy choice made afresh)."""
    client = ProviderClient("groq", concurrency=2, timeout_s=5)
    try:
        return call(adapter_for("groq"), client, base_url, "k" * 10, body(model))[0]
    finally:
        client.close()


def test_gzip_answer_is_decoded(server: str, no_proxy_env: pytest.MonkeyPatch) -> None:
    outcome = call_once(f"http://{server}/v1", "gzipped")
    assert isinstance(outcome, Success) and outcome.usage["total_tokens"] == 4


def test_proxy_from_environment_is_used(server: str, no_proxy_env: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY points at the local server: the request reaches it in absolute form (as a
    proxy receives it) for a host that does not even resolve."""
    no_proxy_env.setenv("HTTP_PROXY", f"http://{server}")
    Handler.seen.clear()
    outcome = call_once("http://upstream.invalid/v1", "m")
    assert isinstance(outcome, Success)
    assert Handler.seen == ["POST http://upstream.invalid/v1/chat/completions HTTP/1.1"]


def test_no_proxy_goes_direct(server: str, no_proxy_env: pytest.MonkeyPatch) -> None:
    no_proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    no_proxy_env.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert proxy_for(f"http://{server}/v1/chat/completions") is None
    Handler.seen.clear()
    outcome = call_once(f"http://{server}/v1", "m")
    assert isinstance(outcome, Success)
    assert Handler.seen == ["POST /v1/chat/completions HTTP/1.1"]


def test_stream_split_inside_lines(server: str, no_proxy_env: pytest.MonkeyPatch) -> None:
    got: list[dict[str, Any]] = []
    client = ProviderClient("groq", concurrency=2, timeout_s=5)
    try:
        raw = client.send(f"http://{server}/v1", "k" * 10, body("m", stream=True),
                          on_chunk=got.append)
    finally:
        client.close()
    assert len(got) == 2 and got[-1]["usage"]["total_tokens"] == 4
    whole = json.loads(raw.content)
    assert whole["choices"][0]["message"]["content"] == "pong"


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n",
                                             blacklist_categories=("Cs",)), max_size=20),
                max_size=8),
       st.lists(st.integers(min_value=0, max_value=400), max_size=6),
       st.booleans())
def test_lines_same_whatever_the_splits(lines: list[str], cuts: list[int], crlf: bool) -> None:
    data = "".join(line + ("\r\n" if crlf else "\n") for line in lines).encode()
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert list(_lines(pieces)) == lines


@pytest.mark.parametrize("base", ["http://h:abc/v1", "ftp://x/v1", "garbage", "http:///v1",
                                  "http://[::1/v1"])
def test_an_unusable_base_url_is_a_transport_failure(base: str) -> None:
    client = ProviderClient("groq", concurrency=1, timeout_s=5)
    try:
        with pytest.raises(TransportFailure) as info:
            client.send(base, "k" * 10, body("m"))
    finally:
        client.close()
    assert "invalid URL" in str(info.value) and info.value.__cause__ is None


def test_an_error_of_the_chunk_callback_is_not_taken_for_the_upstreams(
        server: str, no_proxy_env: pytest.MonkeyPatch) -> None:
    """The gateway's client going away mid-stream surfaces in ``on_chunk``: that must not
    look like an upstream failure (which another target might be tried for)."""
    def gone(chunk: dict[str, Any]) -> None:
        raise ConnectionResetError("the client went away")

    client = ProviderClient("groq", concurrency=2, timeout_s=5)
    try:
        with pytest.raises(ConnectionResetError):
            client.send(f"http://{server}/v1", "k" * 10, body("m", stream=True), on_chunk=gone)
    finally:
        client.close()
