"""``dispatch report``: usage persisted per UTC day, totals and paid-equivalent savings."""

from __future__ import annotations

import json
import os
import re
import uuid
from types import SimpleNamespace

import pytest
import redis
from typer.testing import CliRunner

from dispatcher.cli import app
from dispatcher.commands.report import (
    build_report,
    chart_svg,
    paid_cost,
    report_json,
    terminal_chart,
)
from dispatcher.config import load_config
from dispatcher.config.models import Price
from tests.cluster import TEST_REDIS_URL, model, provider, write_config
from workers.usage import (
    Usage,
    days_back,
    load_usage,
    parse_hash,
    record_usage,
    tokens_of,
    usage_key,
    utc_day,
)

PRICES = {
    "alpha/a1": Price(input_per_million=1.0, output_per_million=2.0),
    "beta/b1": Price(input_per_million=0.5, output_per_million=4.0),
}
DAYS = ["2026-05-01", "2026-05-02", "2026-05-03"]


def u(requests: int, prompt: int, completion: int, milli: int = 0) -> Usage:
    return Usage(requests=requests, ok=requests, prompt_tokens=prompt,
                 completion_tokens=completion, milli_neurons=milli)


# ------------------------------------------------------------ pure computation
def test_paid_cost_is_per_million_tokens_and_none_without_price():
    assert paid_cost(u(1, 1_000_000, 500_000), PRICES["alpha/a1"]) == pytest.approx(2.0)
    assert paid_cost(u(1, 2_000, 1_000), PRICES["beta/b1"]) == pytest.approx(0.005)
    assert paid_cost(u(1, 10, 10), None) is None


def test_totals_savings_and_unpriced_targets():
    data = {
        "2026-05-01": {"alpha/a1": u(10, 100_000, 50_000), "beta/b1": u(2, 4_000, 1_000)},
        "2026-05-03": {"alpha/a1": u(1, 1_000, 1_000),
                       "gamma/g1": u(5, 9_000, 9_000, milli=12_345)},
    }
    rep = build_report(data, PRICES, DAYS)
    assert [(r.day, r.target) for r in rep.rows] == [
        ("2026-05-01", "alpha/a1"), ("2026-05-01", "beta/b1"),
        ("2026-05-03", "alpha/a1"), ("2026-05-03", "gamma/g1")]
    t = rep.totals
    assert (t.requests, t.prompt_tokens, t.completion_tokens) == (18, 114_000, 61_000)
    assert t.neurons == pytest.approx(12.345)
    # alpha: 101k in * $1 + 51k out * $2 ; beta: 4k * $0.5 + 1k * $4 ; gamma: no price
    expected = (101_000 * 1 + 51_000 * 2 + 4_000 * 0.5 + 1_000 * 4) / 1e6
    assert rep.savings_usd == pytest.approx(expected)
    assert rep.unpriced == ["gamma/g1"]
    by = rep.by_target()
    assert by["alpha/a1"][0].requests == 11
    assert by["alpha/a1"][1] == pytest.approx((101_000 + 102_000) / 1e6)
    daily = rep.daily_by_provider()
    assert list(daily) == DAYS and daily["2026-05-02"] == {}
    assert daily["2026-05-01"]["beta"] == (5_000, pytest.approx(0.006))


def test_a_paid_target_costs_but_saves_nothing():
    data = {"2026-05-01": {"alpha/a1": u(1, 1_000_000, 0)}}
    rep = build_report(data, PRICES, DAYS, paid_targets={"alpha/a1"})
    assert rep.rows[0].cost_usd == pytest.approx(1.0)
    assert rep.savings_usd == 0


def test_json_shape():
    rep = build_report({"2026-05-02": {"beta/b1": u(3, 1_000, 2_000)}}, PRICES, DAYS, True)
    doc = report_json(rep)
    assert doc["simulated"] is True and doc["days"] == DAYS
    [row] = doc["rows"]
    assert set(row) == {"day", "target", "provider", "model", "requests", "ok",
                        "prompt_tokens", "completion_tokens", "total_tokens", "neurons",
                        "paid_equivalent_usd", "savings_usd", "paid_target", "simulated"}
    assert row["simulated"] is True
    assert (row["provider"], row["model"], row["total_tokens"]) == ("beta", "b1", 3_000)
    assert doc["totals"]["savings_usd"] == pytest.approx(0.0085)
    assert doc["by_target"]["beta/b1"]["requests"] == 3


def test_charts_render_every_day_and_provider():
    data = {"2026-05-01": {"alpha/a1": u(1, 1_000_000, 0), "beta/b1": u(1, 1_000_000, 0)}}
    rep = build_report(data, PRICES, DAYS)
    svg = chart_svg(rep)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert ">alpha<" in svg and ">beta<" in svg and "05-03" in svg
    from rich.console import Console

    console = Console(record=True, width=100)
    console.print(terminal_chart(rep, width=20))
    text = console.export_text()
    assert "█" * 20 in text  # alpha: the largest bar spans the width
    assert "█" * 10 in text and "$0.5000" in text  # beta saved half as much


def test_tokens_of_tolerates_odd_usage():
    assert tokens_of({"prompt_tokens": 3, "completion_tokens": 4}) == (3, 4)
    assert tokens_of({"prompt_tokens": 3, "total_tokens": 10}) == (3, 7)
    assert tokens_of(None) == (0, 0)
    assert tokens_of({"prompt_tokens": "x"}) == (0, 0)


def test_parse_hash_ignores_foreign_fields():
    raw = {"openrouter/openai/gpt-oss-120b:free|requests": "2", "junk": "1",
           "a/b|unknown": "5", "a/b|prompt_tokens": "7"}
    out = parse_hash(raw)
    assert out["openrouter/openai/gpt-oss-120b:free"].requests == 2
    assert out["a/b"].prompt_tokens == 7 and set(out) == {"openrouter/openai/gpt-oss-120b:free",
                                                          "a/b"}


def test_days_back():
    from datetime import date

    assert days_back(3, date(2026, 3, 1)) == ["2026-02-27", "2026-02-28", "2026-03-01"]
    assert utc_day(0) == "1970-01-01"


# ------------------------------------------------------------------ with Redis
@pytest.fixture
def env(tmp_path, monkeypatch):
    cfg_dir = write_config(
        tmp_path / "config",
        {"alpha": provider(model("a1")),
         "cf": provider(model("n1", neurons={"input_per_million": 1_000_000,
                                             "output_per_million": 2_000_000}))},
        {"fast": ["alpha/a1", "cf/n1"]},
        {"prices": {"alpha/a1": {"input_per_million": 1.0, "output_per_million": 2.0},
                    "cf/n1": {"input_per_million": 10.0, "output_per_million": 10.0}}},
    )
    ns = "trep" + uuid.uuid4().hex[:8]
    r = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    monkeypatch.setenv("DISPATCH_NAMESPACE", ns)
    monkeypatch.setenv("DISPATCH_CONFIG", str(cfg_dir))
    rt = SimpleNamespace(r=r, namespace=ns, config=load_config(cfg_dir))
    yield rt
    for key in r.scan_iter(f"{ns}:*"):
        r.delete(key)


def test_recorded_usage_is_kept_per_day_and_mode(env):
    today = utc_day()
    record_usage(env, "alpha/a1", {"prompt_tokens": 10, "completion_tokens": 5}, False)
    record_usage(env, "alpha/a1", {"prompt_tokens": 20, "completion_tokens": 1}, False)
    record_usage(env, "alpha/a1", None, False, ok=False)  # a 429: a request, no tokens
    record_usage(env, "cf/n1", {"prompt_tokens": 3, "completion_tokens": 2}, True)
    live = load_usage(env.r, env.namespace, [today], simulated=False)[today]
    sim = load_usage(env.r, env.namespace, [today], simulated=True)[today]
    a = live["alpha/a1"]
    assert (a.requests, a.ok, a.prompt_tokens, a.completion_tokens) == (3, 2, 30, 6)
    assert "cf/n1" not in live and sim["cf/n1"].neurons == pytest.approx(3 + 4)
    ttl = env.r.ttl(usage_key(env.namespace, today, False))
    assert 399 * 86400 < ttl <= 400 * 86400


def test_record_usage_swallows_redis_errors(env, caplog):
    broken = SimpleNamespace(r=redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2),
                             namespace=env.namespace, config=env.config)
    record_usage(broken, "alpha/a1", {"prompt_tokens": 1}, False)  # must not raise
    assert "not recorded" in caplog.text


def test_report_command_json_and_table(env, tmp_path):
    record_usage(env, "alpha/a1", {"prompt_tokens": 1_000_000, "completion_tokens": 500_000},
                 True)
    record_usage(env, "cf/n1", {"prompt_tokens": 100_000, "completion_tokens": 0}, True)
    runner = CliRunner()
    res = runner.invoke(app, ["report", "--simulated", "--json", "--days", "2"],
                        env={"REDIS_URL": TEST_REDIS_URL})
    assert res.exit_code == 0, res.output
    [doc] = json.loads(res.output)
    assert doc["simulated"] is True
    assert doc["totals"]["requests"] == 2
    assert doc["totals"]["savings_usd"] == pytest.approx(2.0 + 1.0)
    assert doc["totals"]["neurons"] == pytest.approx(100_000.0)
    [live] = json.loads(runner.invoke(app, ["report", "--live", "--json"]).output)
    assert live["rows"] == [] and live["simulated"] is False  # never shown as real

    chart = tmp_path / "chart.svg"
    res = runner.invoke(app, ["report", "--simulated", "--chart", str(chart)],
                        env={"COLUMNS": "140", "TTY_COMPATIBLE": "1"})
    assert res.exit_code == 0, res.output
    assert "alpha" in res.output and "█" in res.output
    text = re.sub(r"\x1b\[[0-9;]*m", "", res.output)  # a terminal's colours
    assert re.search(r"Saved about \$3\.0000", text), text
    assert chart.read_text().startswith("<svg")


def test_report_shows_real_and_simulated_apart_each_labelled(env):
    record_usage(env, "alpha/a1", {"prompt_tokens": 10, "completion_tokens": 5}, True)
    record_usage(env, "alpha/a1", {"prompt_tokens": 7, "completion_tokens": 1}, False)
    runner = CliRunner()
    docs = json.loads(runner.invoke(app, ["report", "--json"]).output)
    assert [d["simulated"] for d in docs] == [False, True]
    assert [d["totals"]["prompt_tokens"] for d in docs] == [7, 10]
    shown = runner.invoke(app, ["report"], env={"COLUMNS": "200", "TTY_COMPATIBLE": "1"})
    assert shown.exit_code == 0, shown.output
    live, _, sim = shown.output.partition("SIMULATED traffic")
    assert "live traffic, real providers" in live and sim
    piped = runner.invoke(app, ["report"], env={"COLUMNS": "30"}).stdout.splitlines()
    header = piped[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in piped[1:]]
    assert sorted((r["simulated"], r["prompt_tokens"]) for r in rows) == [
        ("false", "7"), ("true", "10")]
    assert all(r["model"] == "a1" and r["provider"] == "alpha" for r in rows)


def test_png_chart_needs_matplotlib(env, tmp_path):
    record_usage(env, "alpha/a1", {"prompt_tokens": 1, "completion_tokens": 1}, False)
    res = CliRunner().invoke(app, ["report", "--chart", str(tmp_path / "c.png")])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert res.exit_code == 2 and "matplotlib" in res.output
    else:
        assert res.exit_code == 0 and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_report_needs_redis(monkeypatch, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("DISPATCH_STATE_DIR", str(tmp_path / "none"))  # no local state here
    res = CliRunner().invoke(app, ["report"], env=env)
    assert res.exit_code == 2 and "REDIS_URL" in res.output
