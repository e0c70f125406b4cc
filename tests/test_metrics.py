"""Prometheus metrics: counters per call, and quota gauges equal to the engine's snapshot."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.config.models import Per, Unit
from tests.cluster import Cluster, job_line, model, provider, write_config
from workers import metrics
from workers.quota.engine import LimitState


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus text exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


# ----------------------------------------------------------------- in-process
def test_record_call_counts_outcomes_tokens_latency():
    reg = metrics.REGISTRY
    lbl = {"provider": "zeta", "model": "m/1"}

    def get(name: str, **extra: str) -> float:
        return reg.get_sample_value(name, {**lbl, **extra}) or 0.0

    before = get("dispatch_upstream_calls_total", outcome="Success")
    metrics.record_call("zeta/m/1", "Success", 0.3,
                        {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12})
    metrics.record_call("zeta/m/1", "RateLimited", 0.01, None)
    assert get("dispatch_upstream_calls_total", outcome="Success") == before + 1
    assert get("dispatch_tokens_total", kind="prompt") >= 7
    assert get("dispatch_tokens_total", kind="completion") >= 5
    assert reg.get_sample_value("dispatch_upstream_429_total", {"provider": "zeta"}) >= 1
    assert get("dispatch_upstream_latency_seconds_count") >= 2


def test_refusal_labels_stay_bounded():
    assert metrics.limit_label("groq/m: 30 requests/minute") == "groq/m: 30 requests/minute"
    assert metrics.limit_label("groq: cooldown (please retry in 3.2s)") == "groq: cooldown"
    assert metrics.limit_label(None) == "unknown"
    metrics.record_refusal("zeta/m/1", "zeta/m/1: cooldown (slow down, id 1234)")
    assert metrics.REGISTRY.get_sample_value(
        "dispatch_reservations_refused_total",
        {"provider": "zeta", "limit": "zeta/m/1: cooldown"}) >= 1


def test_quota_collector_reports_the_snapshot_and_survives_errors():
    states = [LimitState("p", None, Unit.requests, Per.day, 100, 30, 70, 1.5e9),
              LimitState("p", "m", Unit.tokens, Per.minute, 6000, 0, 6000, None)]
    engines = {False: SimpleNamespace(snapshot=lambda: states),
               True: SimpleNamespace(snapshot=lambda: 1 / 0)}
    rt = SimpleNamespace(quota=lambda simulated: engines[simulated])
    reg = CollectorRegistry()
    reg.register(metrics.QuotaCollector(lambda: rt))
    found = samples(generate_latest(reg).decode())
    base = {"mode": "live", "provider": "p", "unit": "requests", "per": "day"}
    assert value(found, "dispatch_quota_used", model="*", **base) == 30
    assert value(found, "dispatch_quota_remaining", model="*", **base) == 70
    assert value(found, "dispatch_quota_limit", model="*", **base) == 100
    assert value(found, "dispatch_quota_resets_at_seconds", model="*", **base) == 1.5e9
    tok = {"mode": "live", "provider": "p", "model": "m", "unit": "tokens", "per": "minute"}
    assert value(found, "dispatch_quota_remaining", **tok) == 6000
    assert value(found, "dispatch_quota_resets_at_seconds", **tok) is None
    assert value(found, "dispatch_quota_up", mode="live") == 1
    assert value(found, "dispatch_quota_up", mode="sim") == 0


# ------------------------------------------------------------ a real worker

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory) -> Any:
    tmp = tmp_path_factory.mktemp("metrics")
    cfg = write_config(
        tmp / "config",
        {"alpha": provider(model("a1", limits=[{"unit": "requests", "limit": 100, "per": "day"},
                                               {"unit": "tokens", "limit": 100_000,
                                                "per": "hour"}]),
                           limits=[{"unit": "requests", "limit": 1000, "per": "day"}]),
         "beta": provider(model("b1", neurons={"input_per_million": 30_000,
                                               "output_per_million": 70_000},
                                limits=[{"unit": "requests", "limit": 50, "per": "day"}]))},
        {"fast": ["alpha/a1", "beta/b1"]},
        {"routing": {"preference_delay_s": 1.0, "horizon_s": 1.0}},
    )
    port = _free_port()
    mp = pytest.MonkeyPatch()
    mp.setenv("DISPATCH_METRICS_PORT", str(port))
    try:
        with Cluster(cfg, tmp) as c:
            c.start_worker("--all", name="metrics")
            lines = ([job_line(f"a{i}", "alpha/a1", text="x" * (10 * i)) for i in range(5)]
                     + [job_line(f"b{i}", "beta/b1") for i in range(3)])
            results = c.wait(c.submit(lines), timeout=90)
            url = f"http://127.0.0.1:{port}/metrics"
            end = time.monotonic() + 30
            while True:
                try:
                    httpx.get(url, timeout=5).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > end:
                        raise AssertionError(c.log("metrics")[-3000:]) from None
                    time.sleep(0.2)
            yield SimpleNamespace(cluster=c, url=url, results=results, config=cfg)
    finally:
        mp.undo()


def test_call_and_token_counters_match_the_batch(cluster_run):
    found = samples(httpx.get(cluster_run.url, timeout=5).text)
    assert all(r["response"]["status_code"] == 200 for r in cluster_run.results)
    for prov, mdl, n in (("alpha", "a1", 5), ("beta", "b1", 3)):
        mine = [r for r in cluster_run.results if r["dispatch"]["provider"] == prov]
        assert len(mine) == n
        assert value(found, "dispatch_upstream_calls_total", provider=prov, model=mdl,
                     outcome="Success") == n
        assert value(found, "dispatch_upstream_latency_seconds_count", provider=prov,
                     model=mdl) == n
        usage = [r["response"]["body"]["usage"] for r in mine]
        prompt = sum(u["prompt_tokens"] for u in usage)
        completion = sum(u["completion_tokens"] for u in usage)
        assert value(found, "dispatch_tokens_total", provider=prov, model=mdl,
                     kind="prompt") == prompt
        assert value(found, "dispatch_tokens_total", provider=prov, model=mdl,
                     kind="completion") == completion
    beta = [r["response"]["body"]["usage"] for r in cluster_run.results
            if r["dispatch"]["provider"] == "beta"]
    neurons = sum(math.ceil((u["prompt_tokens"] * 30_000 + u["completion_tokens"] * 70_000)
                            / 1e6 * 1000) for u in beta) / 1000
    assert value(found, "dispatch_neurons_total", provider="beta", model="b1") == \
        pytest.approx(neurons)


def test_quota_gauges_equal_the_engine_snapshot(cluster_run):
    from workers.runtime import get_runtime

    found = samples(httpx.get(cluster_run.url, timeout=5).text)
    rt = get_runtime()
    for mode, simulated in (("live", False), ("sim", True)):
        states = rt.quota(simulated).snapshot()
        assert states
        for s in states:
            lv = {"mode": mode, "provider": s.provider, "model": s.model or "*",
                  "unit": s.unit.value, "per": s.per.value}
            assert value(found, "dispatch_quota_used", **lv) == s.used, lv
            assert value(found, "dispatch_quota_remaining", **lv) == s.remaining, lv
            assert value(found, "dispatch_quota_limit", **lv) == s.limit, lv
    sim = {"mode": "sim", "provider": "alpha", "unit": "requests", "per": "day"}
    assert value(found, "dispatch_quota_used", model="a1", **sim) == 5
    assert value(found, "dispatch_quota_used", model="*", **sim) == 5
    assert value(found, "dispatch_quota_used", mode="live", provider="alpha", model="a1",
                 unit="requests", per="day") == 0
    assert value(found, "dispatch_quota_up", mode="sim") == 1


def test_worker_usage_reaches_the_report(cluster_run):
    from workers.runtime import get_runtime
    from workers.usage import load_usage, utc_day

    rt = get_runtime()
    day = utc_day()
    usage = load_usage(rt.r, rt.namespace, [day], simulated=True)[day]
    assert usage["alpha/a1"].requests == 5 and usage["beta/b1"].requests == 3
    assert load_usage(rt.r, rt.namespace, [day], simulated=False) == {}
