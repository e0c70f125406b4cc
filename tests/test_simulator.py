"""The provider simulator over real HTTP: dialects, limits, the over-limit counter, chat."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher.config import Config, load_config
from dispatcher.config.models import QuotaSettings
from workers.quota.costs import estimate_prompt_tokens
from workers.simulator import Simulator
from workers.simulator.dialects import go_duration

AUTH = {"Authorization": "Bearer sim"}
HELLO = [{"role": "user", "content": "hello"}]


class FakeClock:
    """Wall time the test moves by hand (so windows are judged to the millisecond)."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(tmp_path: Path, providers_yaml: str) -> Config:
    (tmp_path / "providers.yaml").write_text(providers_yaml)
    (tmp_path / "routes.yaml").write_text("routes: {}\n")
    return load_config(tmp_path, simulate=True)


def provider_yaml(name: str, dialect: str, limits: str = "[]", model: str = "m1",
                  model_extra: str = "", tz: str = "UTC") -> str:
    return f"""
  {name}:
    base_url: https://example.invalid/v1
    api_key_env: SIM_TEST_{name.upper()}_KEY
    dialect: {dialect}
    timezone: {tz}
    limits: {limits}
    models:
      - id: "{model}"
        context_window: 2000
        max_output_tokens: 1000
{model_extra}"""


@pytest.fixture
def sim_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Simulator] = []

    def make(providers: str, **kwargs: Any) -> Simulator:
        cfg = make_config(tmp_path, "providers:" + providers)
        sim = Simulator(cfg, **kwargs).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


_CLIENT = httpx.Client()  # one pool for the module: keep-alive keeps timing jitter low


def chat(sim: Simulator, provider: str, model: str = "m1", messages: Any = None,
         headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    return _CLIENT.post(f"{sim.base_url(provider)}/chat/completions",
                      json={"model": model, "messages": messages or HELLO, **body},
                      headers=AUTH if headers is None else headers, timeout=10)


# -- basics -------------------------------------------------------------------------


def test_completion_shape_models_and_ids(sim_factory: Any) -> None:
    sim = sim_factory(provider_yaml("p", "openai"))
    r = chat(sim, "p", max_tokens=10)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "m1"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15}
    assert r.headers["x-request-id"].startswith("req_")
    assert chat(sim, "p").json()["usage"]["completion_tokens"] == 32  # reply length default
    models = httpx.get(f"{sim.base_url('p')}/models", headers=AUTH).json()
    assert [m["id"] for m in models["data"]] == ["m1"]


def test_unknown_provider_model_and_missing_auth(sim_factory: Any) -> None:
    sim = sim_factory(provider_yaml("g", "groq") + provider_yaml("c", "cloudflare"))
    r = httpx.post(f"{sim.url}/nope/v1/chat/completions", json={}, headers=AUTH)
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = chat(sim, "g", model="missing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = chat(sim, "g", headers={})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = chat(sim, "c", headers={})
    assert r.status_code == 401 and r.json()["success"] is False
    assert sim.stats()["totals"]["received"] == 4


def test_reasoning_field_per_dialect(sim_factory: Any) -> None:
    extra = "        reasoning: true\n"
    model = {"openrouter": "m1:free"}
    sim = sim_factory("".join(provider_yaml(d, d, model=model.get(d, "m1"), model_extra=extra)
                              for d in ("groq", "openrouter", "nvidia", "cloudflare")))
    for dialect, field in (("groq", "reasoning"), ("openrouter", "reasoning"),
                           ("nvidia", "reasoning_content"), ("cloudflare", "reasoning_content")):
        message = chat(sim, dialect, model.get(dialect, "m1")).json()["choices"][0]["message"]
        assert field in message, dialect
    assert chat(sim, "openrouter", "m1:free").json()["usage"]["cost"] == 0


def test_usage_stays_below_dispatcher_estimate(sim_factory: Any) -> None:
    sim = sim_factory(provider_yaml("p", "openai", model_extra="        vision: true\n"))
    samples = [
        HELLO,
        [{"role": "system", "content": "x" * 999}, {"role": "user", "content": "y" * 3001}],
        [{"role": "user", "content": [{"type": "text", "text": "describe " * 50},
                                      {"type": "image_url", "image_url": {"url": "data:,"}}]}],
    ]
    for messages in samples:
        reported = chat(sim, "p", messages=messages).json()["usage"]["prompt_tokens"]
        assert 0 < reported < estimate_prompt_tokens(messages, QuotaSettings())


# -- dialects -----------------------------------------------------------------------


def test_go_duration() -> None:
    assert go_duration(179.56) == "2m59.56s"
    assert go_duration(7.66) == "7.66s"
    assert go_duration(0.25) == "250ms"
    assert go_duration(3723.5) == "1h2m3.5s"


def test_groq_headers_and_429(sim_factory: Any) -> None:
    limits = """
        limits:
          - {unit: requests, limit: 2, per: minute}
          - {unit: requests, limit: 100, per: day}
          - {unit: tokens, limit: 6000, per: minute}"""
    sim = sim_factory(provider_yaml("groq", "groq", model_extra=limits))
    r = chat(sim, "groq")
    assert r.status_code == 200
    h = r.headers
    assert h["x-ratelimit-limit-requests"] == "100"  # the per-DAY figure
    assert h["x-ratelimit-remaining-requests"] == "99"
    assert h["x-ratelimit-limit-tokens"] == "6000"
    assert int(h["x-ratelimit-remaining-tokens"]) == 6000 - r.json()["usage"]["total_tokens"]
    assert h["x-ratelimit-reset-tokens"].endswith("s")
    assert "retry-after" not in h
    chat(sim, "groq")
    r = chat(sim, "groq")
    assert r.status_code == 429
    err = r.json()["error"]
    assert err["type"] == "requests" and err["code"] == "rate_limit_exceeded"
    assert "requests per minute (RPM): Limit 2, Used 2, Requested 1" in err["message"]
    assert 58 <= int(r.headers["retry-after"]) <= 60
    assert "x-ratelimit-limit-requests" in r.headers


def test_groq_tokens_429_message(sim_factory: Any) -> None:
    limits = "        limits: [{unit: tokens, limit: 100, per: minute}]\n"
    sim = sim_factory(provider_yaml("groq", "groq", model_extra=limits))
    assert chat(sim, "groq", max_tokens=40).status_code == 200  # 5 + 40... capped at 32
    assert chat(sim, "groq", max_tokens=40).status_code == 200
    r = chat(sim, "groq", max_tokens=40)
    assert r.status_code == 429
    err = r.json()["error"]
    assert err["type"] == "tokens"
    assert "tokens per minute (TPM): Limit 100, Used 74, Requested 37" in err["message"]
    assert "Please try again in" in err["message"]
    # a single request larger than the limit can never pass: 413, as Groq does
    big = [{"role": "user", "content": "z" * 800}]
    assert chat(sim, "groq", messages=big).status_code == 413


def test_openrouter_headers_and_429s(sim_factory: Any) -> None:
    limits = "[{unit: requests, limit: 5, per: minute}, {unit: requests, limit: 2, per: day}]"
    sim = sim_factory(provider_yaml("openrouter", "openrouter", limits, model="m:free"))
    r = chat(sim, "openrouter", model="m:free")
    assert r.status_code == 200 and not any("ratelimit" in k.lower() for k in r.headers)
    chat(sim, "openrouter", model="m:free")
    r = chat(sim, "openrouter", model="m:free")
    assert r.status_code == 429
    err = r.json()["error"]
    assert err["code"] == 429 and "free-models-per-day" in err["message"]
    assert r.headers["X-RateLimit-Limit"] == "2"
    assert r.headers["X-RateLimit-Remaining"] == "0"
    reset_ms = int(r.headers["X-RateLimit-Reset"])
    assert reset_ms > time.time() * 1000 and reset_ms % 86_400_000 < 1000  # next UTC midnight
    assert int(r.headers["Retry-After"]) <= 86400
    sim2 = sim_factory(provider_yaml("openrouter", "openrouter",
                                     "[{unit: requests, limit: 1, per: minute}]", model="m:free"))
    chat(sim2, "openrouter", model="m:free")
    r = chat(sim2, "openrouter", model="m:free")
    assert "free-models-per-min" in r.json()["error"]["message"]


def test_cloudflare_neurons_daily_3036(sim_factory: Any) -> None:
    # each request: 5 prompt + 32 completion tokens = 5*1e4/1e6 + 32*1e4/1e6 = 0.37 neurons
    extra = "        neurons: {input_per_million: 10000, output_per_million: 10000}\n"
    sim = sim_factory(provider_yaml("cloudflare", "cloudflare",
                                    "[{unit: neurons, limit: 1, per: day}]", model_extra=extra))
    assert chat(sim, "cloudflare").status_code == 200
    assert chat(sim, "cloudflare").status_code == 200
    r = chat(sim, "cloudflare")
    assert r.status_code == 429 and "retry-after" not in r.headers
    body = r.json()
    assert body["success"] is False and body["errors"][0]["code"] == 3036
    assert "daily free allocation of 1 neurons" in body["errors"][0]["message"]
    stats = sim.stats()
    assert stats["targets"]["cloudflare/m1"]["neurons"] == pytest.approx(0.74)
    assert stats["limits"][0]["used"] == pytest.approx(0.74)


def test_mistral_headers_and_429(sim_factory: Any) -> None:
    limits = ("[{unit: requests, limit: 1, per: second}, {unit: tokens, limit: 5000, per: minute},"
              " {unit: tokens, limit: 100000, per: month}]")
    sim = sim_factory(provider_yaml("mistral", "mistral", limits))
    r = chat(sim, "mistral")
    used = r.json()["usage"]["total_tokens"]
    assert r.headers["ratelimitbysize-limit"] == "5000"
    assert r.headers["ratelimitbysize-remaining"] == str(5000 - used)
    assert 0 < int(r.headers["ratelimitbysize-reset"]) <= 60
    assert r.headers["x-ratelimitbysize-remaining-minute"] == str(5000 - used)
    assert r.headers["x-ratelimitbysize-remaining-month"] == str(100000 - used)
    r = chat(sim, "mistral")
    assert r.status_code == 429
    assert r.json() == {"object": "error", "message": "Requests rate limit exceeded",
                        "type": "rate_limited", "param": None, "code": "1300"}


def test_nvidia_429_has_no_headers(sim_factory: Any) -> None:
    one_per_minute = "[{unit: requests, limit: 1, per: minute}]"
    sim = sim_factory(provider_yaml("nvidia", "nvidia", one_per_minute))
    r = chat(sim, "nvidia")
    assert r.status_code == 200 and not any("rate" in k.lower() for k in r.headers)
    r = chat(sim, "nvidia")
    assert r.status_code == 429
    assert r.json() == {"status": 429, "title": "Too Many Requests"}
    assert "retry-after" not in r.headers


# -- limits and the over-limit counter -----------------------------------------------


def test_three_per_second_fourth_refused(sim_factory: Any) -> None:
    sim = sim_factory(provider_yaml("p", "openai", "[{unit: requests, limit: 3, per: second}]"))
    codes = [chat(sim, "p").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert int(chat(sim, "p").headers["retry-after"]) == 1
    t = sim.stats()["targets"]["p/m1"]
    assert (t["received"], t["ok"], t["rate_limited"], t["over_limit"]) == (5, 3, 2, 2)
    time.sleep(1.0)
    assert chat(sim, "p").status_code == 200


def test_over_limit_counts_a_burst_when_not_enforcing(sim_factory: Any) -> None:
    sim = sim_factory(provider_yaml("p", "openai", "[{unit: requests, limit: 3, per: minute}]"),
                      enforce=False)
    assert [chat(sim, "p").status_code for _ in range(5)] == [200] * 5
    stats = sim.stats()
    assert stats["targets"]["p/m1"]["over_limit"] == 2
    assert stats["targets"]["p/m1"]["rate_limited"] == 0
    assert stats["limits"][0]["over_limit"] == 2
    assert stats["totals"]["over_limit"] == 2


@pytest.mark.parametrize(("gap", "over"), [(1.0, 0), (0.96, 0), (0.95, 0), (0.94, 1)])
def test_spacing_within_tolerance(sim_factory: Any, gap: float, over: int) -> None:
    """1 request/second: arrivals 40 ms closer than the window are within the 50 ms
    tolerance; 60 ms closer is a broken promise."""
    clock = FakeClock()
    sim = sim_factory(provider_yaml("p", "openai", "[{unit: requests, limit: 1, per: second}]"),
                      clock=clock, enforce=False)
    for _ in range(5):
        chat(sim, "p")
        clock.advance(gap)
    assert sim.stats()["targets"]["p/m1"]["over_limit"] == (4 if over else 0)


def test_spacing_real_time_exactly_one_window(sim_factory: Any) -> None:
    """Sent exactly one window apart: real jitter must not count as over-limit."""
    sim = sim_factory(provider_yaml("p", "openai", "[{unit: requests, limit: 2, per: second}]"))
    chat(sim, "p", model="warm-up")  # 404, counts nothing, opens the connection
    start = time.monotonic()
    for i in range(4):  # two per window, the window re-used after exactly 1 s
        time.sleep(max(0.0, start + (i // 2) * 1.0 - time.monotonic()))
        assert chat(sim, "p").status_code == 200
    assert sim.stats()["totals"]["over_limit"] == 0


def test_provider_wide_limit_shared_by_models(sim_factory: Any) -> None:
    yaml = provider_yaml("p", "openai", "[{unit: requests, limit: 2, per: minute}]") + """
      - id: m2
"""
    sim = sim_factory(yaml)
    assert chat(sim, "p", "m1").status_code == 200
    assert chat(sim, "p", "m2").status_code == 200
    assert chat(sim, "p", "m2").status_code == 429
    assert sim.stats()["providers"]["p"]["over_limit"] == 1


def test_calendar_day_limit_resets_at_midnight_in_provider_tz(sim_factory: Any) -> None:
    # 14:59:58 UTC = 23:59:58 in Tokyo
    clock = FakeClock(datetime(2026, 3, 1, 14, 59, 58, tzinfo=UTC).timestamp())
    sim = sim_factory(provider_yaml("g", "groq", "[{unit: requests, limit: 2, per: day}]",
                                    tz="Asia/Tokyo"), clock=clock)
    assert chat(sim, "g").status_code == 200
    assert chat(sim, "g").status_code == 200
    r = chat(sim, "g")
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert "requests per day (RPD)" in r.json()["error"]["message"]
    clock.advance(2.0)  # midnight in Tokyo: a new day
    assert chat(sim, "g").status_code == 200
    assert sim.stats()["limits"][0]["used"] == 1


def test_month_limit(sim_factory: Any) -> None:
    clock = FakeClock(datetime(2026, 1, 31, 23, 0, tzinfo=UTC).timestamp())
    sim = sim_factory(provider_yaml("p", "openai", "[{unit: tokens, limit: 50, per: month}]"),
                      clock=clock)
    assert chat(sim, "p").status_code == 200  # 38 tokens
    assert chat(sim, "p").status_code == 429
    clock.advance(3600)
    assert chat(sim, "p").status_code == 200


def test_tokens_limit_counted_from_usage(sim_factory: Any) -> None:
    sim = sim_factory(provider_yaml("p", "openai", "[{unit: tokens, limit: 100, per: minute}]"))
    totals = [chat(sim, "p", max_tokens=n).json()["usage"]["total_tokens"] for n in (10, 20)]
    assert totals == [15, 25]
    r = chat(sim, "p")  # 37 more would make 77: fine; then 37 more is 114: refused
    assert r.status_code == 200
    assert chat(sim, "p").status_code == 429
    assert sim.stats()["targets"]["p/m1"]["tokens"] == 77


# -- chat semantics -----------------------------------------------------------------


def test_vision_parts(sim_factory: Any) -> None:
    yaml = provider_yaml("p", "openai") + """
      - id: eyes
        vision: true
"""
    sim = sim_factory(yaml)
    parts = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                          {"type": "image_url", "image_url": {"url": "data:,"}}]}]
    r = chat(sim, "p", "m1", messages=parts)
    assert r.status_code == 400 and "does not support images" in r.json()["error"]["message"]
    r = chat(sim, "p", "eyes", messages=parts)
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 1000 + 4 + 4


def test_context_overflow_and_stream(sim_factory: Any) -> None:
    sim = sim_factory(provider_yaml("p", "openai") + provider_yaml("c", "cloudflare"))
    big = [{"role": "user", "content": "w" * 9000}]  # 2254 tokens > 2000
    r = chat(sim, "p", messages=big)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded"
    assert "maximum context length is 2000 tokens" in err["message"]
    r = chat(sim, "c", messages=big)
    assert r.status_code == 400 and r.json()["success"] is False
    r = chat(sim, "p", stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["usage"]["completion_tokens"] > 0
    assert chat(sim, "p", max_tokens=5000).status_code == 400  # above max_output_tokens
    assert chat(sim, "p", max_completion_tokens=7).json()["usage"]["completion_tokens"] == 7
    assert sim.stats()["totals"]["rejected"] == 3


@pytest.mark.parametrize("extra", [
    {"logprobs": True}, {"logit_bias": {"1": 2}}, {"top_logprobs": 2}, {"n": 2},
    {"messages": [{"role": "user", "content": "hi", "name": "bob"}]},
])
def test_groq_rejects_unsupported_params(sim_factory: Any, extra: dict[str, Any]) -> None:
    sim = sim_factory(provider_yaml("groq", "groq") + provider_yaml("p", "openai"))
    body = {"model": "m1", "messages": HELLO, **extra}
    r = httpx.post(f"{sim.base_url('groq')}/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{sim.base_url('p')}/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 200


# -- latency and concurrency --------------------------------------------------------


def test_latency_applied_and_settable(sim_factory: Any) -> None:
    sim = sim_factory(provider_yaml("p", "openai"), latency=(0.2, 0.25), seed=1)
    t0 = time.monotonic()
    chat(sim, "p")
    assert 0.2 <= time.monotonic() - t0 < 1.0
    r = httpx.post(f"{sim.url}/_sim/latency", json={"min_ms": 0, "max_ms": 0})
    assert r.status_code == 200 and sim.stats()["latency"] == {"min_s": 0.0, "max_s": 0.0}
    t0 = time.monotonic()
    chat(sim, "p")
    assert time.monotonic() - t0 < 0.2


def test_fifty_parallel_requests_with_latency(sim_factory: Any) -> None:
    sim = sim_factory(provider_yaml("p", "openai"), latency=(0.2, 0.2))
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    with httpx.Client(limits=limits, headers=AUTH, timeout=10) as client:
        url = f"{sim.base_url('p')}/chat/completions"
        client.post(url, json={"model": "m1", "messages": HELLO})  # warm up
        t0 = time.monotonic()
        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(
                lambda _: client.post(url, json={"model": "m1", "messages": HELLO}).status_code,
                range(50)))
        elapsed = time.monotonic() - t0
    assert codes == [200] * 50
    assert elapsed < 1.2, elapsed


# -- admin endpoints ----------------------------------------------------------------


def test_admin_endpoints(sim_factory: Any) -> None:
    sim = sim_factory(provider_yaml("p", "openai", "[{unit: requests, limit: 1, per: minute}]"))
    chat(sim, "p")
    stats = httpx.get(f"{sim.url}/_sim/stats").json()
    assert stats["targets"]["p/m1"]["ok"] == 1
    assert stats["limits"][0] == {"provider": "p", "model": None, "unit": "requests",
                                  "limit": 1, "per": "minute", "used": 1, "over_limit": 0}
    r = httpx.post(f"{sim.url}/_sim/inject", json={"provider": "p", "kind": "503", "count": 2})
    assert r.json() == {"ok": True, "pending": 2}
    assert httpx.post(f"{sim.url}/_sim/inject", json={"provider": "p", "kind": "x"}
                      ).status_code == 400
    assert httpx.post(f"{sim.url}/_sim/reset").json() == {"ok": True}
    stats = sim.stats()
    assert stats["totals"]["received"] == 0 and stats["pending_faults"] == 0
    assert chat(sim, "p").status_code == 200  # quota windows were reset too
