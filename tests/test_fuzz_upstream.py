"""Property tests of what an upstream sends back: headers and bodies of any shape.

Whatever the status, headers and bytes, the header parsers return finite, bounded
numbers or nothing, and every adapter classifies the answer into an outcome — a usable
``Success`` only when its usage is trustworthy — never an exception. Fixed seeds.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import FUZZ, json_like
from workers.providers import headers as hdr
from workers.providers.adapters import ADAPTERS, MAX_USAGE_TOKENS, USAGE_FIELDS, adapter_for
from workers.providers.outcomes import (
    JobRejected,
    Observation,
    RateLimited,
    Success,
    TargetRejected,
    Transient,
)

NAMES = ["retry-after", "Retry-After", "retry-after-ms", "x-ratelimit-remaining",
         "x-ratelimit-limit", "x-ratelimit-reset", "ratelimitbysize-remaining",
         "ratelimitbysize-limit", "ratelimitbysize-reset",
         "x-ratelimitbysize-remaining-minute", "x-ratelimitbysize-limit-month",
         *(f"x-ratelimit-{k}-{u}" for k in ("remaining", "limit", "reset")
           for u in ("requests", "tokens"))]
GARBAGE = ["inf", "-inf", "nan", "1e400", "-5", "0", "1e300", "9" * 400, "7.5s", "1h2m",
           "99999h", "-3s", "Wed, 21 Oct 2015 07:28:00 GMT", "Mon, 01 Jan 99999 00:00:00 GMT",
           "1800000000000", "1800000000", "", "١٢", "1_000"]
header_values = st.sampled_from(GARBAGE) | st.text(max_size=20)
headers = st.dictionaries(st.sampled_from(NAMES), header_values, max_size=6)
messages = st.sampled_from(["Please try again in 1e400s", "try again in 99999h", "per day",
                            "rate-limited upstream", "Rate limit reached: try again in 7.66s",
                            ""]) | st.text(max_size=30)
garbage_json = json_like([math.inf, math.nan, -1, 10**30, "5", True])


def _ok_delay(value: float | None, most: float) -> bool:
    return value is None or (math.isfinite(value) and 0 <= value <= most)


def _ok_observation(o: Observation) -> bool:
    return (0 <= o.remaining <= hdr.MAX_COUNT
            and (o.limit is None or 0 <= o.limit <= hdr.MAX_COUNT)
            and _ok_delay(o.reset_s, hdr.MAX_RESET_S))


@FUZZ
@given(h=headers, message=messages, now=st.floats(0, 4e9))
def test_header_parsers_give_bounded_numbers_or_nothing(h: dict, message: str,
                                                        now: float) -> None:
    assert _ok_delay(hdr.parse_retry_after(h, now=now), hdr.MAX_RETRY_AFTER_S)
    assert _ok_delay(hdr.retry_hint(message), hdr.MAX_RETRY_AFTER_S)
    for fmt in hdr.OBSERVERS:
        assert all(_ok_observation(o) for o in hdr.observations(fmt, h, now=now))


@FUZZ
@given(text=header_values)
def test_go_duration_is_finite_and_not_negative_or_a_value_error(text: str) -> None:
    try:
        seconds = hdr.parse_go_duration(text)
    except ValueError:
        return
    assert math.isfinite(seconds) and seconds >= 0


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    """Completions, error bodies and envelopes with garbage in random places."""
    kind = draw(st.sampled_from(["completion", "error", "envelope", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        body: Any = draw(garbage_json)
    elif kind == "completion":
        body = {"choices": draw(st.just([{"message": {"role": "assistant", "content": "x"}}])
                                | garbage_json),
                "usage": draw(st.dictionaries(st.sampled_from(USAGE_FIELDS), garbage_json)
                              | garbage_json)}
    elif kind == "error":
        body = {"error": draw(st.fixed_dictionaries({"message": garbage_json,
                                                     "code": garbage_json}) | garbage_json)}
    else:
        body = {"success": draw(garbage_json), "errors": draw(garbage_json),
                "result": draw(garbage_json)}
    return json.dumps(body).encode()  # NaN, Infinity and huge integers included


@FUZZ
@given(dialect=st.sampled_from(sorted(ADAPTERS)), status=st.integers(100, 599),
       h=headers, content=answers())
def test_every_answer_is_classified_never_raised(dialect: str, status: int, h: dict,
                                                 content: bytes) -> None:
    out = adapter_for(dialect).classify(status, h, content)
    assert isinstance(out, Success | RateLimited | Transient | TargetRejected | JobRejected)
    if isinstance(out, Success):
        assert 200 <= status < 300
        for name in USAGE_FIELDS:
            value = (out.usage or {}).get(name)
            assert value is None or (type(value) is int and 0 <= value <= MAX_USAGE_TOKENS)
        json.dumps(out.body, allow_nan=False)  # storable and writable as strict JSON
    if isinstance(out, RateLimited):
        assert _ok_delay(out.retry_after_s, hdr.MAX_RETRY_AFTER_S)
    assert all(_ok_observation(o) for o in adapter_for(dialect).observations(status, h))


# -- end to end: a real worker against a real local upstream that sends garbage ---------

GOOD = {"id": "chatcmpl-ok", "object": "chat.completion", "model": "m1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}
CHOICES = b'"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}]'
SCRIPT: list[tuple[int, dict[str, str], bytes]] = [
    (429, {"Retry-After": "inf", "retry-after-ms": "NaN", "x-ratelimit-remaining-tokens": "nan",
           "x-ratelimit-reset-tokens": "1e400s"}, b'{"error": {"message": "slow down"}}'),
    (200, {}, b"{" + CHOICES + b', "usage": {"prompt_tokens": 1e400}}'),
    (200, {}, b"{" + CHOICES + b', "usage": {"prompt_tokens": "12", "completion_tokens": []}}'),
    (200, {"x-ratelimit-remaining-requests": "-inf"},
     b"{" + CHOICES + b', "usage": {"prompt_tokens": ' + b"9" * 5000 + b"}}"),
    (200, {"Retry-After": "-5"}, b"not json at all"),
    (200, {}, b'{"usage": ' + b"[" * 3000 + b"]" * 3000 + b"}"),
]
"""What the upstream answers first, in order; every later request gets ``GOOD``."""


class _Upstream:
    """A tiny OpenAI-shaped HTTP server on a free port, answering ``SCRIPT`` then GOOD."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.script = list(SCRIPT)
        self.requests = 0
        lock = threading.Lock()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    upstream.requests += 1
                    status, headers, body = upstream.script.pop(0) if upstream.script \
                        else (200, {}, json.dumps(GOOD).encode())
                self.send_response(status)
                for k, v in {"content-type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_worker_survives_an_upstream_sending_garbage_and_every_job_ends(
        tmp_path: Any, monkeypatch: Any) -> None:
    """A 429 with Retry-After: inf (and NaN, and rate-limit headers of nan), then 200s with
    usage of 1e400, of strings and lists, a 5,000-digit integer, a body that is not JSON,
    3,000 levels of nesting: the 429 cools the target for the default 5 s (not forever),
    each 200 is a malformed answer (retried); the jobs end with the good answer that
    follows, and the same worker process serves them all."""
    from dispatcher.batches import result_lines, submit
    from dispatcher.batchfile import parse_batch
    from dispatcher.config import load_config
    from tests.cluster import Cluster, job_line, model, provider, write_config

    upstream = _Upstream()
    monkeypatch.setenv("FUZZ_UPSTREAM_KEY", "fuzz-upstream-key")
    cfg_dir = write_config(
        tmp_path / "config",
        {"junk": provider(model("m1"), dialect="groq", base_url=upstream.url,
                          api_key_env="FUZZ_UPSTREAM_KEY", max_retries=2)},
        {"fast": ["junk/m1"]},
        {"jobs": {"max_attempts": 20}},
    )
    try:
        with Cluster(cfg_dir, tmp_path) as c:
            worker = c.start_worker("--all")
            cfg = load_config(cfg_dir)
            batch = submit(parse_batch([job_line(f"g{i}", "fast") for i in range(3)], cfg),
                           simulated=False, deadline_s=600)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                info = c.batch(batch)
                if info and info["completed"] + info["failed"] >= info["total"]:
                    break
                assert worker.poll() is None, c.log("w0")[-3000:]
                time.sleep(0.2)
            lines = list(result_lines(batch))
            assert worker.poll() is None, "the worker died"
            log = c.log("w0")
    finally:
        upstream.close()
    assert [x["custom_id"] for x in lines] == ["g0", "g1", "g2"], c.batch(batch)
    assert all(x["response"]["status_code"] == 200 for x in lines)
    assert all(x["response"]["body"]["choices"][0]["message"]["content"] == "fine"
               for x in lines)
    assert all(x["dispatch"]["usage"]["total_tokens"] == 10 for x in lines)
    assert upstream.requests == len(SCRIPT) + 3  # each garbage answer taken once, no more
    assert "Traceback" not in log and "OverflowError" not in log
