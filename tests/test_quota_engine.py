"""The quota engine against a real Redis (DB 1 only, a namespace per test).

Each pitfall of shared/notes/rate-limiting.md has its own test (``test_pitfall_N_...``);
pitfall 9's calendar arithmetic is in test_quota_limits.py, its Redis side here.
Tests that restart or flush Redis start their own ``redis-server`` on a spare port.
"""

from __future__ import annotations

import math
import random
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import key_slot
from redis.retry import Retry

from dispatcher.config import Config, load_config
from dispatcher.config.models import Per
from workers.quota.costs import Cost
from workers.quota.engine import (
    LimitsMismatch,
    QuotaEngine,
    QuotaUnavailable,
    Reservation,
)
from workers.quota.limits import US, calendar_period, member_cost, rolling_wait_us, window_us

REDIS_URL = "redis://127.0.0.1:6379/1"

PROVIDERS = """\
providers:
  acme:
    base_url: https://acme.invalid/v1
    api_key_env: ACME_API_KEY
    limits:
      - {unit: requests, limit: 8, per: second}
      - {unit: requests, limit: 1000, per: day}
    models:
      - id: small/one
        limits:
          - {unit: requests, limit: 3, per: second}
          - {unit: tokens, limit: 6000, per: minute}
          - {unit: tokens, limit: 50000, per: day}
      - id: big
        limits:
          - {unit: requests, limit: 5, per: second}
  cloud:
    base_url: https://cloud.invalid/v1
    api_key_env: CLOUD_API_KEY
    timezone: America/New_York
    limits:
      - {unit: neurons, limit: 10000, per: day}
    models:
      - id: "@cf/model"
        neurons: {input_per_million: 30000, output_per_million: 70000}
        limits:
          - {unit: tokens, limit: 40000000, per: minute}
          - {unit: tokens, limit: 1000000000, per: month}
"""


def write_config(directory: Path, providers: str = PROVIDERS) -> Config:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "providers.yaml").write_text(providers)
    (directory / "routes.yaml").write_text("routes: {}\n")
    return load_config(directory)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_config(tmp_path / "config")


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    yield client
    client.close()


@pytest.fixture
def ns(r: redis.Redis) -> Iterator[str]:
    name = f"qtest-{uuid.uuid4().hex[:10]}"
    yield name
    keys = list(r.scan_iter(f"{name}:*", count=1000))
    if keys:
        r.delete(*keys)


@pytest.fixture
def engine(r: redis.Redis, config: Config, ns: str) -> QuotaEngine:
    return QuotaEngine(r, config, namespace=ns)


def small(config: Config):
    return config.target("acme/small/one")


def ns_keys(r: redis.Redis, ns: str) -> list[str]:
    return sorted(r.scan_iter(f"{ns}:*", count=1000))


def used_of(engine: QuotaEngine, provider: str, model: str | None, unit: str, per: str) -> int:
    for s in engine.snapshot():
        if (s.provider, s.model, s.unit.value, s.per.value) == (provider, model, unit, per):
            return s.used
    raise KeyError((provider, model, unit, per))


def sleep_until_fresh_second() -> None:
    """Wait until the start of a wall-clock second so a short burst stays in one window."""
    frac = time.time() % 1
    if frac > 0.5:
        time.sleep(1.02 - frac)


# ---- basics -----------------------------------------------------------------------

def test_grant_then_refuse_with_exact_wait(engine: QuotaEngine, r: redis.Redis, ns: str,
                                           config: Config) -> None:
    t = small(config)
    grants = [engine.reserve(t, Cost(1, 100)) for _ in range(3)]
    assert all(g.granted and g.reservation_id for g in grants)
    refused = engine.reserve(t, Cost(1, 100))
    assert not refused.granted and not refused.never
    assert refused.limit == "acme/small/one: 3 requests/second"
    key = f"{ns}:q:live:{{acme}}:m:small/one:requests:second"
    entries = [(int(s), member_cost(m)) for m, s in r.zrange(key, 0, -1, withscores=True)
               if m[0].isdigit()]
    win = window_us(Per.second, config.settings.quota.timing_margin_ms,
                    config.settings.quota.timing_margin_pct)
    expected = rolling_wait_us(entries, 1, 3, int(refused.at * US), win) / US
    assert refused.wait_s == pytest.approx(expected, abs=1e-6)
    assert 0 < refused.wait_s <= 1.01
    time.sleep(refused.wait_s + 0.002)
    assert engine.reserve(t, Cost(1, 100)).granted


def test_provider_wide_limit_is_shared_by_models(engine: QuotaEngine, config: Config) -> None:
    sleep_until_fresh_second()
    one, big = small(config), config.target("acme/big")
    got = [engine.reserve(one, Cost(1, 10)).granted for _ in range(3)]
    got += [engine.reserve(big, Cost(1, 0)).granted for _ in range(5)]
    assert all(got)
    refused = engine.reserve(big, Cost(1, 0))  # big's own 5/s is full too
    assert not refused.granted
    assert used_of(engine, "acme", None, "requests", "second") == 8
    assert used_of(engine, "acme", None, "requests", "day") == 8


def test_all_or_nothing_and_longest_wait(engine: QuotaEngine, config: Config) -> None:
    t = small(config)
    assert engine.reserve(t, Cost(1, 5000)).granted
    assert engine.reserve(t, Cost(1, 900)).granted
    assert engine.reserve(t, Cost(1, 50)).granted  # requests/second now full (3)
    # Both requests/second (about 1 s) and tokens/minute (about 60 s) refuse: the longest wins.
    r = engine.reserve(t, Cost(1, 1000))
    assert not r.granted and r.limit == "acme/small/one: 6000 tokens/minute"
    minute = window_us(Per.minute, 20, 0.2) / US  # 60 s + 20 ms + 0.2 %
    assert 58 < r.wait_s <= minute
    before = engine.snapshot()
    assert not engine.reserve(t, Cost(1, 1000)).granted
    assert [s.used for s in engine.snapshot()] == [s.used for s in before]


def test_probe_consumes_nothing(engine: QuotaEngine, r: redis.Redis, ns: str,
                                config: Config) -> None:
    t = small(config)
    assert engine.reserve(t, Cost(1, 1000)).granted
    dump = {k: r.dump(k) for k in ns_keys(r, ns)}
    assert engine.probe(t, Cost(1, 1000), count=2).granted
    assert engine.probe(t, Cost(1, 1000)).reservation_id is None
    refused = engine.probe(t, Cost(1, 1000), count=3)  # 4 requests > 3/second
    assert not refused.granted and refused.limit == "acme/small/one: 3 requests/second"
    too_big = engine.probe(t, Cost(1, 1000), count=7)  # 7000 tokens > 6000/minute, ever
    assert too_big.never and math.isinf(too_big.wait_s)
    assert {k: r.dump(k) for k in ns_keys(r, ns)} == dump


def test_reconcile_refund_frees_and_debit_consumes(engine: QuotaEngine,
                                                    config: Config) -> None:
    t = small(config)
    a = engine.reserve(t, Cost(1, 4000))
    assert a.granted and not engine.probe(t, Cost(1, 2500)).granted
    assert engine.reconcile(a.reservation_id, Cost(1, 1000))  # refund 3000
    assert used_of(engine, "acme", "small/one", "tokens", "minute") == 1000
    assert used_of(engine, "acme", "small/one", "tokens", "day") == 1000
    assert engine.probe(t, Cost(1, 5000)).granted
    b = engine.reserve(t, Cost(1, 1000))
    assert engine.reconcile(b.reservation_id, Cost(1, 4500))  # debit 3500
    assert used_of(engine, "acme", "small/one", "tokens", "minute") == 5500
    assert used_of(engine, "acme", "small/one", "tokens", "day") == 5500
    assert not engine.probe(t, Cost(1, 600)).granted
    assert engine.probe(t, Cost(1, 500)).granted
    # Requests stay charged whatever the usage says.
    assert used_of(engine, "acme", "small/one", "requests", "second") == 2


def test_cooldown_refuses_model_then_provider(engine: QuotaEngine, config: Config) -> None:
    one, big = small(config), config.target("acme/big")
    engine.cooldown(one, 0.6, reason="429 retry-after")
    r = engine.reserve(one, Cost(1, 10))
    assert not r.granted and r.limit == "acme/small/one: cooldown (429 retry-after)"
    assert 0.4 < r.wait_s <= 0.6
    assert engine.reserve(big, Cost(1, 0)).granted  # the other model is not paused
    secs, reason = engine.cooldown_of(one)
    assert 0.3 < secs <= 0.6 and reason == "429 retry-after"
    engine.cooldown(one, 0.1, reason="shorter")  # never shortens a longer cooldown
    assert engine.cooldown_of(one)[1] == "429 retry-after"
    engine.cooldown(big, 2.0, scope="provider", reason="overloaded")
    assert engine.reserve(big, Cost(1, 0)).limit == "acme: cooldown (overloaded)"
    assert engine.cooldown_of(one) == (pytest.approx(2.0, abs=0.2), "overloaded")
    assert engine.cooldown_of(config.target("cloud/@cf/model")) == (0.0, None)


def test_close_until_reset_closes_until_local_midnight(engine: QuotaEngine,
                                                       config: Config) -> None:
    t = config.target("cloud/@cf/model")
    secs = engine.close_until_reset(t, "day", reason="3036 daily neurons spent")
    now = time.time()
    end = calendar_period(Per.day, "America/New_York", now).end
    assert secs == pytest.approx(end - now, abs=2)
    r = engine.reserve(t, Cost(1, 10, 10))
    assert not r.granted and r.limit == "cloud: cooldown (3036 daily neurons spent)"
    assert r.wait_s == pytest.approx(end - now, abs=2)


def test_observe_lowers_remaining(engine: QuotaEngine, config: Config) -> None:
    t = small(config)
    assert engine.reserve(t, Cost(1, 1000)).granted
    # Upstream: only 500 tokens left this minute, resetting in 5 s (someone else uses the key).
    assert engine.observe(t, "tokens", "minute", remaining=500, reset_s=5) == 4500
    assert used_of(engine, "acme", "small/one", "tokens", "minute") == 5500
    r = engine.reserve(t, Cost(1, 600))
    assert not r.granted and 4 < r.wait_s <= 5.0
    assert engine.observe(t, "tokens", "minute", remaining=2000, reset_s=5) == 0  # never raises
    assert engine.observe(t, "tokens", "day", remaining=100) == 50000 - 100 - 1000
    assert used_of(engine, "acme", "small/one", "tokens", "day") == 49900
    assert engine.observe(t, "requests", "day", remaining=10, scope="provider") == 989
    assert engine.observe(t, "neurons", "day", remaining=0) == 0  # not configured: ignored


def test_limits_fingerprint(r: redis.Redis, config: Config, ns: str, tmp_path: Path) -> None:
    first = QuotaEngine(r, config, namespace=ns)
    fp = first.ensure_limits()
    assert first.ensure_limits() == fp == config.limits_fingerprint()
    changed = write_config(tmp_path / "other", PROVIDERS.replace("limit: 3, per", "limit: 4, per"))
    other = QuotaEngine(r, changed, namespace=ns)
    with pytest.raises(LimitsMismatch) as exc:
        other.ensure_limits()
    msg = str(exc.value)
    assert fp in msg and changed.limits_fingerprint() in msg
    assert "dispatch quota --adopt-limits" in msg
    assert other.adopt_limits() == changed.limits_fingerprint()
    assert other.ensure_limits() == changed.limits_fingerprint()
    with pytest.raises(LimitsMismatch):
        first.ensure_limits()


def test_simulated_keys_are_separate(r: redis.Redis, config: Config, ns: str) -> None:
    live = QuotaEngine(r, config, namespace=ns)
    sim = QuotaEngine(r, config, namespace=ns, simulated=True)
    t = small(config)
    for _ in range(3):
        assert sim.reserve(t, Cost(1, 100)).granted
    assert not sim.reserve(t, Cost(1, 100)).granted
    assert live.reserve(t, Cost(1, 100)).granted
    assert used_of(live, "acme", "small/one", "requests", "second") == 1
    assert used_of(sim, "acme", "small/one", "requests", "second") == 3
    keys = ns_keys(r, ns)
    assert any(":q:sim:" in k for k in keys) and any(":q:live:" in k for k in keys)


def test_bytes_client_works(config: Config, ns: str) -> None:
    raw = redis.Redis.from_url(REDIS_URL)  # decode_responses=False
    e = QuotaEngine(raw, config, namespace=ns)
    t = small(config)
    a = e.reserve(t, Cost(1, 100))
    assert a.granted and e.reconcile(a.reservation_id, Cost(1, 50))
    e.cooldown(t, 0.5, reason="why")
    assert e.cooldown_of(t)[1] == "why"
    assert e.reserve(t, Cost(1, 1)).limit == "acme/small/one: cooldown (why)"
    assert used_of(e, "acme", "small/one", "tokens", "minute") == 50
    raw.close()


def test_reservation_ids(engine: QuotaEngine, config: Config) -> None:
    t = small(config)
    a = engine.reserve(t, Cost(1, 100), reservation_id="job-1:attempt-1")
    assert a.reservation_id == "acme/job-1:attempt-1"
    with pytest.raises(ValueError):
        engine.reserve(t, Cost(1, 100), reservation_id="job-1:attempt-1")
    assert engine.reconcile("acme/job-1:attempt-1", Cost(1, 10))
    with pytest.raises(ValueError):
        engine.reconcile("nobody-knows", Cost(1, 10))
    assert not engine.reconcile("acme/never-reserved", Cost(1, 10))


def test_snapshot_lists_every_limit_once(engine: QuotaEngine, config: Config) -> None:
    t = small(config)
    r = engine.reserve(t, Cost(1, 700))
    snap = engine.snapshot()
    assert len(snap) == 2 + 3 + 1 + 1 + 2  # acme: 2 shared, 3 + 1 per model; cloud: 1 + 2
    tpm = next(s for s in snap if s.model == "small/one" and s.text == "6000 tokens/minute")
    assert (tpm.used, tpm.remaining) == (700, 5300)
    assert tpm.resets_at == pytest.approx(r.at + window_us(Per.minute, 20, 0.2) / US, abs=1e-3)
    idle = next(s for s in snap if s.model == "big")
    assert (idle.used, idle.resets_at) == (0, None)
    day = next(s for s in snap if s.provider == "cloud" and s.per is Per.day)
    assert day.resets_at == calendar_period(Per.day, "America/New_York", time.time()).end


# ---- pitfalls ----------------------------------------------------------------------

def test_pitfall_1_denied_attempts_are_not_usage(engine: QuotaEngine, r: redis.Redis,
                                                 ns: str, config: Config) -> None:
    t = config.target("acme/big")
    sleep_until_fresh_second()
    results = [engine.reserve(t, Cost(1, 0)) for _ in range(200)]
    assert sum(x.granted for x in results) == 5
    assert used_of(engine, "acme", "big", "requests", "second") == 5
    # 5 entries, the running sum and the TTL sentinel
    assert r.zcard(f"{ns}:q:live:{{acme}}:m:big:requests:second") == 5 + 2
    assert used_of(engine, "acme", None, "requests", "day") == 5
    wait = max(x.wait_s for x in results if not x.granted)
    time.sleep(wait + 0.01)
    assert sum(engine.reserve(t, Cost(1, 0)).granted for _ in range(50)) == 5


def test_pitfall_2_refusal_changes_no_key(engine: QuotaEngine, r: redis.Redis, ns: str,
                                          config: Config) -> None:
    t = small(config)
    assert engine.reserve(t, Cost(1, 100)).granted
    engine.observe(t, "tokens", "day", remaining=0)  # daily tokens spent, minute still free
    before = {k: (r.dump(k), r.ttl(k)) for k in ns_keys(r, ns)}
    x = engine.reserve(t, Cost(1, 100))
    assert not x.granted and x.limit == "acme/small/one: 50000 tokens/day"
    assert {k: (r.dump(k), r.ttl(k)) for k in ns_keys(r, ns)} == before


def test_pitfall_3_client_clock_skew(engine: QuotaEngine, r: redis.Redis, config: Config,
                                     ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two clients, one with its clock 5 s ahead: per window, admitted stays within the
    limit, because the engine only reads the server's clock."""
    skewed_engine = QuotaEngine(redis.Redis.from_url(REDIS_URL, decode_responses=True),
                                config, namespace=ns)
    real_time = time.time
    skewed: set[int] = set()

    def fake_time() -> float:
        return real_time() + (5.0 if threading.get_ident() in skewed else 0.0)

    monkeypatch.setattr(time, "time", fake_time)
    t = config.target("acme/big")
    grants: list[float] = []
    lock = threading.Lock()
    stop = real_time() + 2.3

    def run(e: QuotaEngine, skew: bool) -> None:
        if skew:
            skewed.add(threading.get_ident())
            assert time.time() - real_time() > 4.9
        while real_time() < stop:
            x = e.reserve(t, Cost(1, 0))
            if x.granted:
                with lock:
                    grants.append(x.at)
            else:
                # A client that trusted its own clock would also mis-time its retries.
                real_sleep(min(x.wait_s, 0.05))

    real_sleep = time.sleep
    threads = [threading.Thread(target=run, args=(engine, False)),
               threading.Thread(target=run, args=(skewed_engine, True))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    grants.sort()
    assert len(grants) >= 5 * 2
    for i, g in enumerate(grants):  # any half-open 1 s window holds at most 5
        assert sum(1 for h in grants[i:] if h < g + 1.0) <= 5
    # Every grant charged the server's day (summed over days: the run may cross midnight).
    day_keys = r.keys(f"{ns}:q:live:{{acme}}:p:requests:day:*")
    assert sum(int(v) for v in r.mget(day_keys)) == len(grants)


def test_pitfall_3_skewed_clock_charges_the_servers_day(engine: QuotaEngine, r: redis.Redis,
                                                        ns: str, config: Config,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 86400)  # a day ahead
    t = small(config)
    x = engine.reserve(t, Cost(1, 100))
    assert x.granted
    server_day = calendar_period(Per.day, "UTC", x.at).key
    assert r.get(f"{ns}:q:live:{{acme}}:m:small/one:tokens:day:{server_day}") == "100"
    tomorrow = calendar_period(Per.day, "UTC", real_time() + 86400).key
    assert r.get(f"{ns}:q:live:{{acme}}:m:small/one:tokens:day:{tomorrow}") is None
    assert engine.reserve(t, Cost(1, 100)).granted  # the learned offset avoids a retry


def test_pitfall_4_ttl_outlives_refill(engine: QuotaEngine, r: redis.Redis, ns: str,
                                       config: Config) -> None:
    t = small(config)
    ct = config.target("cloud/@cf/model")
    for i in range(18):  # past the point where the script refreshes a log's TTL
        engine.reserve(t, Cost(1, 300 + i))
        engine.reserve(ct, Cost(1, 1000, 500))
        engine.observe(t, "tokens", "minute", remaining=1000, reset_s=30)
        now_us = int(r.time()[0]) * US + int(r.time()[1])
        for key in ns_keys(r, ns):
            if r.type(key) == "zset":
                per = Per(key.rsplit(":", 1)[1])
                win = window_us(per, config.settings.quota.timing_margin_ms,
                                config.settings.quota.timing_margin_pct)
                newest = max(int(s) for m, s in r.zrange(key, 0, -1, withscores=True)
                             if m[0].isdigit())
                refill_ms = (newest + win - now_us) / 1000
                assert r.pttl(key) >= refill_ms, key
            elif ":day:" in key or ":month:" in key:
                tz = "America/New_York" if "{cloud}" in key else "UTC"
                per = Per.day if ":day:" in key else Per.month
                end = calendar_period(per, tz, now_us / US).end
                assert r.ttl(key) >= end - now_us / US, key
        time.sleep(0.1)


def test_pitfall_5_oversized_cost_refused_at_once(engine: QuotaEngine, config: Config) -> None:
    t = small(config)
    started = time.monotonic()
    x = engine.reserve(t, Cost(1, 6001))
    assert not x.granted and x.never and math.isinf(x.wait_s)
    assert x.limit == "acme/small/one: 6000 tokens/minute"
    assert time.monotonic() - started < 0.5
    ct = config.target("cloud/@cf/model")
    y = engine.reserve(ct, Cost(1, 10, 10_000 * 1000 + 1))
    assert y.never and y.limit == "cloud: 10000 neurons/day"
    assert engine.reserve(t, Cost(1, 6000)).granted  # exactly the limit fits


def _free_port() -> int:
    for port in range(6401, 6410):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    pytest.skip("no spare port in 6401-6409")


def _start_redis(port: int, d: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(d)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")
def test_pitfall_6_noscript_after_flush_and_restart(config: Config, tmp_path: Path) -> None:
    port = _free_port()
    proc = _start_redis(port, tmp_path)
    try:
        client = redis.Redis(port=port, decode_responses=True, socket_connect_timeout=1,
                             retry=Retry(NoBackoff(), 0))
        e = QuotaEngine(client, config)
        t = small(config)
        a = e.reserve(t, Cost(1, 100))
        assert a.granted
        client.script_flush()
        b = e.reserve(t, Cost(1, 100))
        assert b.granted
        client.script_flush()
        assert e.reconcile(b.reservation_id, Cost(1, 10))
        client.script_flush()
        e.cooldown(t, 0.01)
        proc.terminate()
        proc.wait(10)
        with pytest.raises(QuotaUnavailable):  # down: fail closed
            e.reserve(t, Cost(1, 100))
        proc = _start_redis(port, tmp_path)  # a fresh server: empty script cache
        assert e.reserve(t, Cost(1, 100)).granted
        assert e.probe(t, Cost(1, 100)).granted
    finally:
        proc.terminate()
        proc.wait(10)


def test_pitfall_7_one_slot_per_reservation(engine: QuotaEngine, r: redis.Redis, ns: str,
                                            config: Config) -> None:
    sent: list[list[bytes]] = []
    real = engine._evalsha

    def spy(sha, keys, args):
        sent.append([k if isinstance(k, bytes) else str(k).encode() for k in keys])
        return real(sha, keys, args)

    engine._evalsha = spy  # type: ignore[method-assign]
    try:
        for target in config.targets():
            x = engine.reserve(target, Cost(1, 100, 100))
            assert x.granted
            engine.reconcile(x.reservation_id, Cost(1, 50, 50))
            engine.cooldown(target, 0.01)
            engine.observe(target, "tokens", "minute", remaining=10)
    finally:
        engine._evalsha = real  # type: ignore[method-assign]
    assert len(sent) >= 3 * len(config.targets())
    for keys in sent:
        assert len({key_slot(k) for k in keys}) == 1, keys
    by_provider: dict[str, set[int]] = {}
    for key in ns_keys(r, ns):
        if key.endswith(":q:limits"):
            continue
        provider = key.split("{", 1)[1].split("}", 1)[0]
        by_provider.setdefault(provider, set()).add(key_slot(key.encode()))
    assert set(by_provider) == {"acme", "cloud"}
    assert all(len(slots) == 1 for slots in by_provider.values())


def test_pitfall_8_large_token_limits_are_exact(engine: QuotaEngine, config: Config) -> None:
    t = config.target("cloud/@cf/model")  # 40M tokens/minute, 1e9 tokens/month
    rng = random.Random(8)
    granted = 0
    while True:
        cost = rng.randint(30_000, 39_999)
        x = engine.reserve(t, Cost(1, cost, 1))
        if not x.granted:
            assert x.limit == "cloud/@cf/model: 40000000 tokens/minute"
            break
        granted += cost
    assert 40_000_000 * 0.999 <= granted <= 40_000_000
    assert used_of(engine, "cloud", "@cf/model", "tokens", "minute") == granted
    assert engine.reserve(t, Cost(1, 40_000_000 - granted, 1)).granted  # exactly full
    assert not engine.reserve(t, Cost(1, 1, 1)).granted
    assert used_of(engine, "cloud", "@cf/model", "tokens", "minute") == 40_000_000
    assert used_of(engine, "cloud", "@cf/model", "tokens", "month") == 40_000_000


def test_neuron_limits_are_in_neurons(engine: QuotaEngine, config: Config) -> None:
    """Limits are configured in neurons; costs are counted in milli-neurons."""
    t = config.target("cloud/@cf/model")  # 10,000 neurons/day, provider-wide
    assert engine.reserve(t, Cost(1, 10, 9_999_500)).granted  # 9,999.5 neurons
    assert engine.reserve(t, Cost(1, 10, 500)).granted  # exactly 10,000
    x = engine.reserve(t, Cost(1, 10, 1))
    assert not x.granted and not x.never and x.limit == "cloud: 10000 neurons/day"
    assert used_of(engine, "cloud", None, "neurons", "day") == 10_000
    assert engine.reserve(t, Cost(1, 10, 10_000_001)).never
    assert engine.observe(t, "neurons", "day", remaining=0, scope="provider") == 0


def test_neuron_observe_and_snapshot(engine: QuotaEngine, config: Config) -> None:
    t = config.target("cloud/@cf/model")
    assert engine.reserve(t, Cost(1, 10, 2_500)).granted  # 2.5 neurons
    assert used_of(engine, "cloud", None, "neurons", "day") == 2.5
    assert engine.observe(t, "neurons", "day", remaining=9_000, scope="provider") == 997.5
    assert used_of(engine, "cloud", None, "neurons", "day") == 1_000
    assert engine.probe(t, Cost(1, 10, 9_000_000)).granted
    assert not engine.probe(t, Cost(1, 10, 9_000_001)).granted


def test_pitfall_9_calendar_counter_uses_period_key(engine: QuotaEngine, r: redis.Redis,
                                                    ns: str, config: Config) -> None:
    t = config.target("cloud/@cf/model")
    x = engine.reserve(t, Cost(1, 10, 2500))
    day = calendar_period(Per.day, "America/New_York", x.at).key
    month = calendar_period(Per.month, "UTC", x.at)
    month_ny = calendar_period(Per.month, "America/New_York", x.at)
    assert r.get(f"{ns}:q:live:{{cloud}}:p:neurons:day:{day}") == "2500"
    assert r.get(f"{ns}:q:live:{{cloud}}:m:@cf/model:tokens:month:{month_ny.key}") == "10"
    assert month.key[:4] == month_ny.key[:4]


def test_pitfall_10_second_reconcile_changes_nothing(engine: QuotaEngine, r: redis.Redis,
                                                     ns: str, config: Config) -> None:
    t = small(config)
    x = engine.reserve(t, Cost(1, 3000))
    assert engine.reconcile(x.reservation_id, Cost(1, 1200))
    dump = {k: r.dump(k) for k in ns_keys(r, ns)}
    assert not engine.reconcile(x.reservation_id, Cost(1, 1200))
    assert not engine.reconcile(x.reservation_id, Cost(1, 5000))
    assert {k: r.dump(k) for k in ns_keys(r, ns)} == dump
    assert used_of(engine, "acme", "small/one", "tokens", "minute") == 1200
    # A reservation never reconciled (its worker died) keeps its estimate charged.
    engine.reserve(t, Cost(1, 2000))
    assert used_of(engine, "acme", "small/one", "tokens", "minute") == 3200


def test_pitfall_11_redis_down_fails_closed(config: Config) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5,
                       retry=Retry(NoBackoff(), 0))
    e = QuotaEngine(dead, config)
    t = small(config)
    sent: list[str] = []

    def call_upstream_if_reserved() -> None:
        if e.reserve(t, Cost(1, 10)).granted:
            sent.append("request")

    with pytest.raises(QuotaUnavailable):
        call_upstream_if_reserved()
    assert sent == []
    assert isinstance(QuotaUnavailable("x"), RuntimeError)
    for call in (lambda: e.probe(t, Cost()), lambda: e.reconcile("acme/x", Cost()),
                 e.snapshot, e.ensure_limits, lambda: e.cooldown_of(t)):
        with pytest.raises(QuotaUnavailable):
            call()


def test_reservation_is_frozen() -> None:
    x = Reservation(True, "acme/x", 0.0, None)
    with pytest.raises(AttributeError):
        x.granted = False  # type: ignore[misc]


# ---- late sends -------------------------------------------------------------------

def test_shift_moves_a_late_requests_entries_so_its_slot_frees_later(
        engine: QuotaEngine, config: Config) -> None:
    t = config.target("acme/big")  # 5 requests/second (and the provider's 8/second)
    sleep_until_fresh_second()
    grants = [engine.reserve(t, Cost(1, 0)) for _ in range(5)]
    assert all(g.granted for g in grants)
    first = engine.reserve(t, Cost(1, 0))
    assert not first.granted
    # Every one of them actually left 0.4 s after its grant: their slots free 0.4 s later.
    for g in grants:
        assert engine.shift(t, Cost(1, 0), g.reservation_id, 0.4) == 2  # model + provider
    later = engine.reserve(t, Cost(1, 0))
    assert not later.granted
    assert later.wait_s == pytest.approx(first.wait_s + 0.4, abs=0.05)
    # moving nothing is harmless
    assert engine.shift(t, Cost(1, 0), "acme/unknown", 0.4) == 0
