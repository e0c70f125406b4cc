"""Reserves: a share of a calendar limit that batch jobs cannot take and interactive
requests can. The quota engine enforces it (real Redis, the real reserve script); a real
batch on real workers stops at it; `dispatch quota` and the metrics show it."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from dispatcher.cli import app
from dispatcher.config import ConfigError, load_config
from dispatcher.config.models import Limit
from tests.cluster import TEST_REDIS_URL, Cluster, job_line, model, provider, write_config
from workers.quota.classes import class_cap
from workers.quota.costs import Cost
from workers.quota.engine import QuotaEngine

DAY = {"unit": "requests", "limit": 10, "per": "day",
       "reserve": {"share": 0.3, "for": "interactive"}}


def _config(tmp_path, limits=(DAY,), tz="UTC"):
    return write_config(tmp_path / "cfg",
                        {"a": provider(model("m", limits=list(limits)), timezone=tz)},
                        {"fast": ["a/m"]})


@pytest.fixture
def engine(tmp_path):
    cfg = load_config(_config(tmp_path), simulate=True)
    r = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    ns = "tr" + uuid.uuid4().hex[:8]
    yield QuotaEngine(r, cfg, namespace=ns, simulated=True), cfg.target("a/m")
    for key in r.scan_iter(f"{ns}*", count=1000):
        r.delete(key)


def test_batch_stops_at_the_reserve_and_interactive_uses_it(engine):
    q, target = engine
    got = [q.reserve(target, Cost(1)) for _ in range(8)]
    assert [r.granted for r in got] == [True] * 7 + [False]
    assert got[-1].limit == "a/m: 10 requests/day" and got[-1].wait_s > 0
    assert not q.probe(target, Cost(1)).granted
    assert q.probe(target, Cost(1), klass="interactive").granted
    inter = [q.reserve(target, Cost(1), klass="interactive") for _ in range(4)]
    assert [r.granted for r in inter] == [True, True, True, False]
    state = next(s for s in q.snapshot() if s.per.value == "day")
    assert (state.used, state.remaining, state.reserved) == (10, 0, 3)


def test_more_than_the_batch_share_at_once_never_fits_a_batch(engine):
    q, target = engine
    assert q.probe(target, Cost(1), count=8).never
    assert not q.probe(target, Cost(1), count=8, klass="interactive").never
    with pytest.raises(ValueError, match="reservation class 'urgent'"):
        q.reserve(target, Cost(1), klass="urgent")


def test_reserve_config_rules(tmp_path):
    lim = Limit.model_validate(DAY)
    assert class_cap(10, lim, "batch") == 7 and class_cap(10, lim, "interactive") == 10
    # A limit without a reserve dumps as before reserves existed (same fingerprint).
    assert "reserve" not in Limit.model_validate({**DAY, "reserve": None}).model_dump()
    d = _config(tmp_path, limits=[{"unit": "requests", "limit": 5, "per": "minute",
                                   "reserve": {"share": 0.5}}])
    where = r"providers\.a\.models\[0\]\.limits\[0\]: reserve: only a day or month"
    with pytest.raises(ConfigError, match=where):
        load_config(d)
    d = _config(tmp_path, limits=[{**DAY, "reserve": {"share": 1.0}}])
    with pytest.raises(ConfigError, match="share"):
        load_config(d)


def test_quota_command_and_metrics_show_the_reserve(engine, monkeypatch):
    q, target = engine
    assert q.reserve(target, Cost(1)).granted
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("DISPATCH_NAMESPACE", q.namespace)
    table = CliRunner().invoke(app, ["quota", "--simulated", "--config",
                                     str(q.config.directory)],
                               env={"COLUMNS": "200", "TTY_COMPATIBLE": "1"})  # the table
    assert table.exit_code == 0, table.output
    assert "reserve" in table.output and "3 interactive" in table.output
    out = CliRunner().invoke(app, ["quota", "--simulated", "--config",
                                   str(q.config.directory)], env={"TTY_COMPATIBLE": "0"})
    rows = [dict(zip(out.stdout.splitlines()[0].split("\t"), line.split("\t"), strict=True))
            for line in out.stdout.splitlines()[1:]]  # piped: tab-separated rows
    assert [(r["per"], r["limit"], r["reserved"]) for r in rows] == [("day", "10", "3")]
    doc = json.loads(CliRunner().invoke(app, ["quota", "--simulated", "--json", "--config",
                                              str(q.config.directory)]).stdout)
    assert [d["reserved"] for d in doc] == [3]

    from workers import metrics

    class Rt:
        def quota(self, simulated):
            return q

    reg = CollectorRegistry()
    reg.register(metrics.QuotaCollector(lambda: Rt()))
    value = reg.get_sample_value("dispatch_quota_reserved", {
        "mode": "sim", "provider": "a", "model": "m", "unit": "requests", "per": "day"})
    assert value == 3


def test_a_batch_on_real_workers_stops_at_the_reserve(tmp_path):
    cfg_dir = _config(tmp_path)
    with Cluster(cfg_dir, tmp_path) as c:
        c.start_worker("--all")
        batch = c.submit([job_line(f"b{i}", "fast") for i in range(10)])
        end = time.monotonic() + 60
        while c.batch(batch)["completed"] < 7 and time.monotonic() < end:
            time.sleep(0.05)
        assert c.batch(batch)["completed"] == 7
        # The other three wait for tomorrow's quota: nothing more reaches the upstream ...
        time.sleep(1.0)
        assert c.stats()["targets"]["a/m"]["received"] == 7
        assert c.batch(batch)["completed"] == 7
        # ... while an interactive request still gets through, from the reserve.
        from workers.runtime import get_runtime

        rt = get_runtime()
        q, target = rt.quota(True), rt.config.target("a/m")
        assert q.reserve(target, Cost(1), klass="interactive").granted
        from dispatcher.batches import cancel

        cancel(batch)
