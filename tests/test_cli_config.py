"""`dispatch config check` and `dispatch providers`, run through typer's CliRunner."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dispatcher.cli import app

SHIPPED = Path(__file__).resolve().parent.parent / "config"
PROVIDERS = ("nvidia", "groq", "openrouter", "cloudflare", "mistral")
FAKE_GROQ_KEY = "gsk_" + "A1b2" * 10  # built at runtime: no key-shaped literal in the repo
WIDE = {"COLUMNS": "250"}  # rich wraps table cells at the terminal width


pytestmark = pytest.mark.usefixtures("no_provider_keys")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"TTY_COMPATIBLE": "1", "COLUMNS": "250"})  # a person reading


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    shutil.copytree(SHIPPED, d)
    return d


def _leaky_config(cfg_dir: Path) -> None:
    path = cfg_dir / "providers.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["providers"]["groq"]["base_url"] = "https://api.groq.com/openai/v1?key=" + FAKE_GROQ_KEY
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


# ----------------------------------------------------------------- config check


def test_config_check_passes_on_the_shipped_config(runner: CliRunner) -> None:
    result = runner.invoke(app, ["config", "check", "--config", str(SHIPPED)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert str(SHIPPED) in out
    assert "\nOK\n" in out
    assert "5 providers, 18 models" in out
    for tag in ("fast", "reasoning", "bulk", "vision"):
        assert f"  {tag} " in out
    assert "reasoning  5 targets, 0 usable" in out
    for name in PROVIDERS:
        assert name in out
    assert "GROQ_API_KEY is not set" in out
    assert "CLOUDFLARE_API_TOKEN is not set" in out
    assert "paid models: none" in out
    assert result.stderr == ""


def test_config_check_simulated_enables_everything(runner: CliRunner) -> None:
    result = runner.invoke(app, ["config", "check", "--config", str(SHIPPED), "--simulate"])
    assert result.exit_code == 0, result.output
    assert "every provider is enabled" in result.stdout
    assert "disabled providers: none" in result.stdout
    assert "fast       3 targets, 3 usable" in result.stdout


def test_config_check_reports_a_key_that_enables_a_provider(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", FAKE_GROQ_KEY)
    result = runner.invoke(app, ["config", "check", "--config", str(SHIPPED)])
    assert result.exit_code == 0
    assert "GROQ_API_KEY" not in result.stdout
    assert "fast       3 targets, 1 usable" in result.stdout
    assert FAKE_GROQ_KEY not in result.output


def test_config_check_refuses_a_literal_key(runner: CliRunner, cfg_dir: Path) -> None:
    _leaky_config(cfg_dir)
    result = runner.invoke(app, ["config", "check", "--config", str(cfg_dir)])
    assert result.exit_code == 2
    assert str(cfg_dir) in result.stdout and "OK" not in result.stdout
    assert "providers.yaml: providers.groq.base_url: looks like a literal API key" in result.stderr
    assert FAKE_GROQ_KEY not in result.output
    assert "Traceback" not in result.output


def test_config_check_lists_every_problem(runner: CliRunner, cfg_dir: Path) -> None:
    path = cfg_dir / "routes.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["routes"]["fast"] = ["grok/x", "groq/nope"]
    path.write_text(yaml.safe_dump(doc))
    result = runner.invoke(app, ["config", "check", "--config", str(cfg_dir)])
    assert result.exit_code == 2
    problems = [line.strip() for line in result.stderr.splitlines() if "routes.yaml" in line]
    assert problems == [
        "routes.yaml: routes.fast[0]: unknown provider 'grok' in target 'grok/x'",
        "routes.yaml: routes.fast[1]: unknown model 'nope' of provider 'groq'",
    ]


def test_config_check_invalid_yaml(runner: CliRunner, cfg_dir: Path) -> None:
    (cfg_dir / "settings.yaml").write_text("routing:\n  horizon_s: [1\n")
    result = runner.invoke(app, ["config", "check", "--config", str(cfg_dir)])
    assert result.exit_code == 2
    assert "settings.yaml (line 3, column 1): invalid YAML" in result.stderr
    assert "Traceback" not in result.output


def test_config_check_missing_directory(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "check", "--config", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "configuration directory not found" in result.stderr


def test_config_check_uses_dispatch_config(runner: CliRunner, cfg_dir: Path) -> None:
    result = runner.invoke(app, ["config", "check"], env={"DISPATCH_CONFIG": str(cfg_dir)})
    assert result.exit_code == 0, result.output
    assert str(cfg_dir) in result.stdout


def test_config_check_names_paid_models(runner: CliRunner, cfg_dir: Path) -> None:
    path = cfg_dir / "providers.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["providers"]["openrouter"]["models"].append({"id": "openai/gpt-4o-mini", "paid": True})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = runner.invoke(app, ["config", "check", "--config", str(cfg_dir)])
    assert result.exit_code == 0, result.output
    assert "paid models (skipped: allow_paid is off):\n  openrouter/openai/gpt-4o-mini" in (
        result.stdout
    )


# -------------------------------------------------------------------- providers


def test_providers_lists_every_provider_and_why_disabled(runner: CliRunner) -> None:
    result = runner.invoke(app, ["providers", "--config", str(SHIPPED)], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for name in PROVIDERS:
        assert name in out
    for var in (
        "NVIDIA_API_KEY",
        "GROQ_API_KEY",
        "OPENROUTER_API_KEY",
        "CLOUDFLARE_API_TOKEN",
        "MISTRAL_API_KEY",
    ):
        assert f"disabled: {var} is not set" in out
    assert "qwen/qwen3.6-27b" in out
    assert "@cf/deepseek-ai/deepseek-r1-distill-qwen-32b" in out
    assert "30 req/min · 1,000 req/day · 8,000 tok/min · 200,000 tok/day" in out
    assert "10,000 neurons/day" in out
    assert "131,072" in out


def test_providers_shows_enabled_and_flags(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", FAKE_GROQ_KEY)
    result = runner.invoke(app, ["providers", "--config", str(SHIPPED)], env=WIDE)
    assert result.exit_code == 0, result.output
    scout = next(
        line
        for line in result.stdout.splitlines()
        if "qwen/qwen3.6-27b" in line
    )
    assert "vision" in scout and "enabled" in scout and "disabled" not in scout
    assert FAKE_GROQ_KEY not in result.output


def test_providers_simulated_are_all_enabled(runner: CliRunner) -> None:
    result = runner.invoke(app, ["providers", "--config", str(SHIPPED), "--simulate"], env=WIDE)
    assert result.exit_code == 0
    assert "disabled" not in result.stdout


def test_providers_refuses_a_bad_config(runner: CliRunner, cfg_dir: Path) -> None:
    _leaky_config(cfg_dir)
    result = runner.invoke(app, ["providers", "--config", str(cfg_dir)])
    assert result.exit_code == 2
    assert "providers.groq.base_url: looks like a literal API key" in result.stderr
    assert FAKE_GROQ_KEY not in result.output and "Traceback" not in result.output
