"""``dispatch quota``: the table, the simulated namespace, adopting limits, errors."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import typer
from typer.testing import CliRunner

from dispatcher.commands.quota import humanize, register
from dispatcher.config import load_config
from workers.quota.costs import Cost
from workers.quota.engine import LimitsMismatch, QuotaEngine

REDIS_URL = "redis://127.0.0.1:6379/1"
TTY = {"COLUMNS": "200", "TTY_COMPATIBLE": "1"}  # a person at a terminal
PROVIDERS = """\
providers:
  openrouter:
    base_url: https://or.invalid/v1
    api_key_env: OR_API_KEY
    limits:
      - {unit: requests, limit: 20, per: minute}
      - {unit: requests, limit: 50, per: day}
    models:
      - id: free-model
"""


def row(output: str, limit: str) -> tuple[str, str]:
    """(used, remaining) of the table row of ``limit``."""
    m = re.search(re.escape(limit) + r"\s*│\s*(\S+)\s*│\s*(\S+)", output)
    assert m, output
    return m.group(1), m.group(2)


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app."""

    register(app)
    return app


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    (tmp_path / "providers.yaml").write_text(PROVIDERS)
    (tmp_path / "routes.yaml").write_text("routes: {}\n")
    ns = f"qcmd-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("DISPATCH_NAMESPACE", ns)
    yield tmp_path, ns
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{ns}:*"))
    if keys:
        client.delete(*keys)


def test_table_shows_used_remaining_and_reset(app: typer.Typer, setup) -> None:
    cfg_dir, ns = setup
    cfg = load_config(cfg_dir)
    engine = QuotaEngine(redis.Redis.from_url(REDIS_URL), cfg, namespace=ns)
    for _ in range(3):
        assert engine.reserve(cfg.target("openrouter/free-model"), Cost()).granted
    engine.cooldown(cfg.target("openrouter/free-model"), 30, reason="429 from upstream")
    result = CliRunner().invoke(app, ["quota", "--config", str(cfg_dir), "--live"],
                                env=TTY)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "live counters" in out and "SIMULATED" not in out
    assert "20 requests/minute" in out and "50 requests/day" in out
    assert "(all models)" in out and "openrouter" in out
    assert row(out, "20 requests/minute") == ("3", "17")
    assert row(out, "50 requests/day") == ("3", "47")
    assert "(in " in out
    assert "paused" in out and "429 from upstream" in out
    sim = CliRunner().invoke(app, ["quota", "--config", str(cfg_dir), "--simulated"],
                             env=TTY)
    assert sim.exit_code == 0 and "SIMULATED counters" in sim.output
    assert "live counters" not in sim.output
    assert row(sim.output, "50 requests/day") == ("0", "50")


def test_live_and_simulated_counters_are_shown_apart_each_labelled(app: typer.Typer,
                                                                   setup) -> None:
    cfg_dir, ns = setup
    cfg = load_config(cfg_dir)
    client = redis.Redis.from_url(REDIS_URL)
    sim = QuotaEngine(client, cfg, namespace=ns, simulated=True)
    for _ in range(4):
        assert sim.reserve(cfg.target("openrouter/free-model"), Cost()).granted
    live = QuotaEngine(client, cfg, namespace=ns)
    assert live.reserve(cfg.target("openrouter/free-model"), Cost()).granted
    # default, on a terminal: both tables, each titled with what it counts
    both = CliRunner().invoke(app, ["quota", "--config", str(cfg_dir)], env=TTY)
    assert both.exit_code == 0, both.output
    live_part, _, sim_part = both.output.partition("SIMULATED counters")
    assert "live counters" in live_part and sim_part
    assert row(live_part, "50 requests/day") == ("1", "49")
    assert row(sim_part, "50 requests/day") == ("4", "46")
    # --json: every limit of both sets, the contract's fields, `simulated` telling them apart
    doc = json.loads(CliRunner().invoke(app, ["quota", "--config", str(cfg_dir),
                                              "--json"]).output)
    assert {tuple(sorted(d)) for d in doc} == {tuple(sorted(
        ["provider", "model", "unit", "per", "limit", "used", "remaining", "resets_at",
         "simulated", "reserved"]))}
    day = {d["simulated"]: d for d in doc if d["per"] == "day"}
    assert (day[False]["used"], day[True]["used"]) == (1, 4)
    assert day[True]["model"] is None and day[True]["provider"] == "openrouter"
    assert day[True]["resets_at"] > time.time()
    # piped: one header line and whole tab-separated rows, however narrow the terminal
    piped = CliRunner().invoke(app, ["quota", "--config", str(cfg_dir)], env={"COLUMNS": "20"})
    lines = piped.stdout.splitlines()
    assert lines[0].split("\t") == ["provider", "model", "unit", "per", "limit", "used",
                                    "remaining", "resets_at", "simulated", "reserved"]
    assert "openrouter\t\trequests\tday\t50\t4\t46\t" in piped.stdout
    assert all(len(line.split("\t")) == 10 for line in lines)


def test_adopt_limits(app: typer.Typer, setup, tmp_path: Path) -> None:
    cfg_dir, ns = setup
    old = QuotaEngine(redis.Redis.from_url(REDIS_URL), load_config(cfg_dir), namespace=ns)
    old.ensure_limits()
    (cfg_dir / "providers.yaml").write_text(PROVIDERS.replace("limit: 50", "limit: 1000"))
    new_cfg = load_config(cfg_dir)
    new = QuotaEngine(redis.Redis.from_url(REDIS_URL), new_cfg, namespace=ns)
    with pytest.raises(LimitsMismatch):
        new.ensure_limits()
    shown = CliRunner().invoke(app, ["quota", "--config", str(cfg_dir)], env=TTY)
    assert "--adopt-limits" in shown.output
    result = CliRunner().invoke(app, ["quota", "--config", str(cfg_dir), "--adopt-limits"])
    assert result.exit_code == 0, result.output
    assert new_cfg.limits_fingerprint() in result.output
    assert new.ensure_limits() == new_cfg.limits_fingerprint()


def test_errors_exit_2(app: typer.Typer, setup, monkeypatch: pytest.MonkeyPatch,
                      tmp_path: Path) -> None:
    cfg_dir, _ = setup
    monkeypatch.setenv("DISPATCH_STATE_DIR", str(tmp_path / "no-state"))
    (cfg_dir / "providers.yaml").write_text(PROVIDERS.replace("per: day", "per: fortnight"))
    bad = CliRunner().invoke(app, ["quota", "--config", str(cfg_dir)])
    assert bad.exit_code == 2 and "providers.yaml" in bad.output
    (cfg_dir / "providers.yaml").write_text(PROVIDERS)
    monkeypatch.delenv("REDIS_URL")
    no_redis = CliRunner().invoke(app, ["quota", "--config", str(cfg_dir)])
    assert no_redis.exit_code == 2 and "REDIS_URL" in no_redis.output


def test_humanize() -> None:
    assert [humanize(x) for x in (0, 59.6, 75, 3600, 93784)] == [
        "0s", "1m 00s", "1m 15s", "1h 00m", "1d 2h"]
