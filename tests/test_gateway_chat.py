"""``POST /v1/chat/completions`` through a real gateway and simulator, driven by the
official ``openai`` Python SDK (and raw HTTP where the SDK would hide a status)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.cluster import Cluster, model, provider, write_config
from tests.gateway_server import GatewayServer

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def env(tmp_path: Path):
    providers = {
        "a": provider(model("m1"), model("tight", limits=[
            {"unit": "requests", "limit": 2, "per": "minute"}]),
            model("slow", limits=[{"unit": "requests", "limit": 1, "per": "second"}]),
            model("dear", paid=True)),
        "b": provider(model("m2"), limits=[{"unit": "tokens", "limit": 100000,
                                              "per": "minute"}]),
    }
    routes = {"fast": ["a/m1", "b/m2"], "bulk": ["b/m2"], "reasoning": ["a/tight"],
              "vision": ["a/slow"], "pricey": ["a/dear"]}
    cfg = write_config(tmp_path / "config", providers, routes)
    with Cluster(cfg, tmp_path) as cluster, GatewayServer(cfg) as gw:
        client = openai.OpenAI(api_key="unused", base_url=f"{gw.url}/v1", max_retries=0)
        yield cluster, gw, client


def test_sdk_chat_names_the_target_and_counts_the_attempts(env) -> None:
    cluster, gw, client = env
    raw = client.chat.completions.with_raw_response.create(model="fast", messages=HELLO,
                                                           max_tokens=12)
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("Simulated reply from a/m1")
    assert completion.usage.completion_tokens == 12
    assert raw.headers["x-dispatch-target"] == "a/m1"
    assert raw.headers["x-dispatch-attempts"] == "1"
    pinned = client.chat.completions.with_raw_response.create(model="b/m2", messages=HELLO)
    assert pinned.headers["x-dispatch-target"] == "b/m2"
    # max_completion_tokens is the current name of max_tokens
    c = client.chat.completions.create(model="bulk", messages=HELLO, max_completion_tokens=5)
    assert c.usage.completion_tokens == 5
    # usage reaches `dispatch report` (written in batches, off the request path)
    from dispatcher.gateway.usage import BUFFER
    from workers.usage import days_back, load_usage

    BUFFER.flush()
    day = days_back(1)[0]
    usage = load_usage(cluster.r, cluster.namespace, [day], simulated=True)[day]
    assert usage["a/m1"].ok == 1 and usage["b/m2"].ok == 2
    assert usage["b/m2"].completion_tokens == pinned.parse().usage.completion_tokens + 5


def test_sdk_streaming_reconciles_quota_with_the_last_chunk(env) -> None:
    cluster, gw, client = env
    stream = client.chat.completions.create(model="bulk", messages=HELLO, max_tokens=900,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Simulated reply from b/m2")
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    # the 900-token estimate was reconciled down to what the upstream reported
    used = [s for s in gw.gw.quota().snapshot() if s.provider == "b" and s.unit == "tokens"]
    assert used and used[0].used == usage.total_tokens
    # without include_usage the client gets no usage chunk (the upstream was still asked)
    chunks = list(client.chat.completions.create(model="bulk", messages=HELLO, stream=True))
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json={
            "model": "fast", "messages": HELLO, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
        assert r.headers["x-dispatch-target"] == "a/m1"
        assert r.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"


def test_fallback_after_upstream_failures(env) -> None:
    cluster, gw, client = env
    cluster.sim.inject("a", "500", count=10, model="m1")   # a/m1 keeps failing
    raw = client.chat.completions.with_raw_response.create(model="fast", messages=HELLO)
    assert raw.headers["x-dispatch-target"] == "b/m2"
    assert int(raw.headers["x-dispatch-attempts"]) >= 2
    cluster.sim.faults.clear()
    cluster.sim.inject("b", "503", count=1)                 # one hiccup, then fine
    stream = client.chat.completions.with_raw_response.create(
        model="bulk", messages=HELLO, stream=True)
    assert stream.headers["x-dispatch-attempts"] == "2"
    assert "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)


def test_model_errors(env) -> None:
    cluster, gw, client = env
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=HELLO)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="a/unknown", messages=HELLO)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="pricey", messages=HELLO)
    assert e.value.code == "no_target"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="fast", messages=[
            {"role": "user", "content": "x" * 40_000}])
    assert e.value.code == "too_large"
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "fast", "messages": HELLO},
                   headers={"X-Dispatch-Max-Wait": "soon"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "X-Dispatch-Max-Wait"
    assert cluster.stats()["totals"]["received"] == 0   # nothing reached the upstream


def test_waits_for_capacity_then_429_with_retry_after(env) -> None:
    cluster, gw, client = env
    url = f"{gw.url}/v1/chat/completions"
    body = {"model": "reasoning", "messages": HELLO, "max_tokens": 4}
    assert httpx.post(url, json=body).status_code == 200
    assert httpx.post(url, json=body).status_code == 200
    r = httpx.post(url, json=body, headers={"X-Dispatch-Max-Wait": "1"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    retry = int(r.headers["retry-after"])
    assert 50 <= retry <= 61          # the 2/minute window frees about a minute after
    # 1 request/second: the second request waits for the window instead of failing
    slow = {"model": "vision", "messages": HELLO, "max_tokens": 4}
    assert httpx.post(url, json=slow).status_code == 200
    start = time.monotonic()
    r = httpx.post(url, json=slow, headers={"X-Dispatch-Max-Wait": "5"}, timeout=30)
    assert r.status_code == 200
    assert 0.5 < time.monotonic() - start < 4
    stats = cluster.stats()["totals"]
    assert stats["over_limit"] == 0 and stats["received"] == 4
    # the demand it registered while waiting is gone
    assert not [k for k in cluster.r.scan_iter(f"{cluster.namespace}:gw:demand:*")]


def test_redis_unreachable_fails_closed_with_503(tmp_path: Path) -> None:
    from dispatcher.config import load_config
    from dispatcher.connect import redis_client
    from workers.runtime import Runtime

    cfg_dir = write_config(tmp_path / "config", {"p": provider(model("m1"))},
                           {"fast": ["p/m1"]})
    with Cluster(cfg_dir, tmp_path) as cluster:
        dead = Runtime(load_config(cfg_dir, simulate=True),
                       redis_client("redis://127.0.0.1:9/0"), cluster.namespace)
        with GatewayServer(cfg_dir, rt=dead) as gw:
            body = {"model": "fast", "messages": HELLO}
            r = httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30)
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "quota_store_unavailable"
            with httpx.stream("POST", f"{gw.url}/v1/chat/completions", timeout=30,
                              json={**body, "stream": True}) as s:
                assert s.status_code == 503
        assert cluster.stats()["totals"]["received"] == 0       # nothing was sent


def test_sdk_models_lists_tags_and_targets(env) -> None:
    cluster, gw, client = env
    models = {m.id: m for m in client.models.list()}
    assert {"fast", "bulk", "reasoning", "vision", "pricey"} <= set(models)
    assert {"a/m1", "a/tight", "a/slow", "a/dear", "b/m2"} <= set(models)
    fast = models["fast"].model_dump()
    assert fast["kind"] == "tag" and fast["enabled"] is True
    assert fast["targets"] == ["a/m1", "b/m2"]
    assert models["pricey"].model_dump()["enabled"] is False     # its only target is paid
    target = client.models.retrieve("b/m2").model_dump()
    assert target["kind"] == "target" and target["owned_by"] == "b"
    assert target["context_window"] == 8192
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_upstream_refusals_map_to_the_clients_or_our_fault(env) -> None:
    cluster, gw, client = env
    url = f"{gw.url}/v1/chat/completions"
    body = {"model": "bulk", "messages": HELLO}
    cluster.sim.inject("b", "400", count=1)              # the request itself is refused
    r = httpx.post(url, json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "upstream_rejected"
    assert r.headers["x-dispatch-target"] == "b/m2"
    cluster.sim.inject("b", "401", count=1)              # our key: not the client's fault
    r = httpx.post(url, json=body)
    assert r.status_code == 502 and r.json()["error"]["type"] == "server_error"
