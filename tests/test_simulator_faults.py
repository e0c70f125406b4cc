"""Failure injection: every kind, in each provider's shape, consuming no quota."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import test_simulator as base
from test_simulator import AUTH, chat, provider_yaml
from typer.testing import CliRunner

from dispatcher.cli import app
from dispatcher.commands.simulate import parse_latency_ms
from workers.simulator.faults import KINDS

sim_factory = base.sim_factory  # the shared fixture

ALL = "".join(provider_yaml(d, d, "[{unit: requests, limit: 3, per: minute}]")
              for d in ("openai", "groq", "mistral", "nvidia", "cloudflare"))

PLAIN_STATUS = {"500": 500, "502": 502, "503": 503, "400": 400, "400_param": 400, "401": 401,
                "403": 403, "404": 404, "413": 413, "context": 400}


@pytest.mark.parametrize("kind", sorted(PLAIN_STATUS))
def test_plain_error_kinds_in_each_dialect(sim_factory: Any, kind: str) -> None:
    sim = sim_factory(ALL)
    for provider in ("openai", "groq", "mistral", "nvidia", "cloudflare"):
        sim.inject(provider, kind)
        r = chat(sim, provider)
        assert r.status_code == PLAIN_STATUS[kind], (provider, kind)
        body = r.json()
        if provider in ("openai", "groq"):
            assert set(body["error"]) == {"message", "type", "param", "code"}
        elif provider == "cloudflare":
            assert body["success"] is False and body["errors"][0]["code"]
        elif provider == "mistral":
            assert body["object"] == "error"
        else:
            assert body["status"] == PLAIN_STATUS[kind] and body["title"]
    if kind == "context":
        assert chat_with_fault(sim, "openai", kind)["error"]["code"] == "context_length_exceeded"
    stats = sim.stats()
    assert stats["totals"]["errors_injected"] == 5 + (kind == "context")
    assert stats["totals"]["over_limit"] == 0
    assert all(lim["used"] == 0 for lim in stats["limits"])  # injected: no quota consumed


def chat_with_fault(sim: Any, provider: str, kind: str) -> dict[str, Any]:
    sim.inject(provider, kind)
    return chat(sim, provider).json()


def test_faults_consumed_in_order_and_per_model(sim_factory: Any) -> None:
    sim = sim_factory(provider_yaml("p", "openai") + "      - id: m2\n")
    sim.inject("p", "500")
    sim.inject("p", "503", model="m2")
    sim.inject("p", "502", count=2)
    assert chat(sim, "p", "m1").status_code == 500
    assert chat(sim, "p", "m1").status_code == 502  # the m2 fault waits for m2
    assert chat(sim, "p", "m2").status_code == 503
    assert chat(sim, "p", "m2").status_code == 502
    assert chat(sim, "p", "m2").status_code == 200
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim.inject("p", "418")
    with pytest.raises(ValueError, match="unknown model"):
        sim.inject("p", "500", model="m9")


def test_injected_429_slow_down_with_retry_after(sim_factory: Any) -> None:
    sim = sim_factory(ALL)
    sim.inject("groq", "429", retry_after=7)
    r = chat(sim, "groq")
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    sim.inject("nvidia", "429", retry_after=3)
    r = chat(sim, "nvidia")
    assert r.json() == {"status": 429, "title": "Too Many Requests"}
    assert r.headers["retry-after"] == "3"
    sim.inject("cloudflare", "429")
    r = chat(sim, "cloudflare")
    assert r.status_code == 429 and r.json()["errors"][0]["code"] == 3040  # transient
    assert sim.stats()["totals"]["rate_limited"] == 0  # injected, not a limit refusal


def test_injected_429_daily(sim_factory: Any) -> None:
    extra = "        neurons: {input_per_million: 1, output_per_million: 1}\n"
    sim = sim_factory(provider_yaml("or", "openrouter", model="m:free")
                      + provider_yaml("cloudflare", "cloudflare",
                                      "[{unit: neurons, limit: 10000, per: day}]",
                                      model_extra=extra)
                      + provider_yaml("openai", "openai"))
    sim.inject("or", "429_daily")
    r = chat(sim, "or", "m:free")
    assert r.status_code == 429 and "free-models-per-day" in r.json()["error"]["message"]
    assert 0 < int(r.headers["Retry-After"]) <= 86400
    sim.inject("cloudflare", "429_daily")
    err = chat(sim, "cloudflare").json()["errors"][0]
    assert err["code"] == 3036 and "10,000 neurons" in err["message"]
    sim.inject("openai", "429_daily")
    assert chat(sim, "openai").json()["error"]["code"] == "insufficient_quota"


def test_error_in_200_and_malformed(sim_factory: Any) -> None:
    sim = sim_factory(provider_yaml("or", "openrouter", model="m:free"))
    sim.inject("or", "error_in_200")
    r = chat(sim, "or", "m:free")
    assert r.status_code == 200 and r.json()["error"]["code"] == 502
    assert "choices" not in r.json()
    sim.inject("or", "malformed")
    r = chat(sim, "or", "m:free")
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    assert chat(sim, "or", "m:free").status_code == 200


def test_timeout_holds_the_connection(sim_factory: Any) -> None:
    sim = sim_factory(provider_yaml("p", "openai"), timeout_hold_s=2.0)
    sim.inject("p", "timeout")
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{sim.base_url('p')}/chat/completions", headers=AUTH, timeout=0.3,
                   json={"model": "m1", "messages": [{"role": "user", "content": "hi"}]})
    assert time.monotonic() - t0 < 1.0
    assert chat(sim, "p").status_code == 200  # the server still answers others
    t0 = time.monotonic()
    sim.stop()  # releases the held connection promptly
    assert time.monotonic() - t0 < 2.0


def test_every_kind_is_covered() -> None:
    covered = set(PLAIN_STATUS) | {"429", "429_daily", "error_in_200", "malformed", "timeout"}
    assert covered == set(KINDS)


# -- the command ----------------------------------------------------------------------


def test_parse_latency_ms() -> None:
    assert parse_latency_ms("200-2000") == (0.2, 2.0)
    assert parse_latency_ms("50") == (0.05, 0.05)


def test_simulate_command_refuses_bad_config(tmp_path: Any) -> None:
    (tmp_path / "providers.yaml").write_text("providers: {p: {bogus: 1}}\n")
    (tmp_path / "routes.yaml").write_text("routes: {}\n")
    result = CliRunner().invoke(app, ["simulate", "--config", str(tmp_path), "--port", "0"])
    assert result.exit_code == 2
