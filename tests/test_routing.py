"""The pure routing rules: eligibility of targets for a job, and the choice among them."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest

from dispatcher.config import Config, load_config
from dispatcher.routing import choose_target, eligibility, eligible_targets
from workers.quota.costs import estimate_prompt_tokens

PROVIDERS = """
providers:
  alpha:
    base_url: http://alpha.test/v1
    api_key_env: ALPHA_KEY
    models:
      - id: small
        context_window: {small_ctx}
        max_output_tokens: 2000
        limits:
          - {{unit: tokens, limit: 1000, per: minute}}
      - id: eye
        context_window: 4000
        max_output_tokens: 1000
        vision: true
  beta:
    base_url: http://beta.test/${{BETA_ACCOUNT}}/v1
    api_key_env: BETA_KEY
    limits:
      - {{unit: neurons, limit: 3000, per: day}}
    models:
      - id: org/big
        context_window: 100000
        max_output_tokens: 8000
        neurons: {{input_per_million: 1000000, output_per_million: 1000000}}
      - id: pricey
        paid: true
        neurons: {{input_per_million: 1, output_per_million: 1}}
"""

ROUTES = """
routes:
  fast: [alpha/small, beta/org/big]
  vision: [alpha/eye]
  reasoning: [beta/org/big]
  paidonly: [beta/pricey]
  mixed: [beta/pricey, alpha/small]
"""


def make_config(
    tmp_path: Path, *, small_ctx: int = 1000, settings: str = "", simulate: bool = False
) -> Config:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "providers.yaml").write_text(PROVIDERS.format(small_ctx=small_ctx))
    (tmp_path / "routes.yaml").write_text(ROUTES)
    if settings:
        (tmp_path / "settings.yaml").write_text(textwrap.dedent(settings))
    return load_config(tmp_path, simulate=simulate)


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHA_KEY", "a")
    monkeypatch.setenv("BETA_KEY", "b")
    monkeypatch.setenv("BETA_ACCOUNT", "acct")


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path)


def text_job(text: str = "hello", **extra: object) -> dict:
    return {"model": "fast", "messages": [{"role": "user", "content": text}], **extra}


def image_job() -> dict:
    parts = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    return {"messages": [{"role": "user", "content": parts}], "max_tokens": 100}


def keys_of(targets: list) -> list[str]:
    return [t.key for t in targets]


# --- eligibility ------------------------------------------------------------------


def test_tag_gives_route_in_preference_order(cfg: Config) -> None:
    targets, reason = eligible_targets(text_job(max_tokens=100), "fast", None, cfg)
    assert keys_of(targets) == ["alpha/small", "beta/org/big"]
    assert reason is None


def test_pinned_job_gets_only_its_target(cfg: Config) -> None:
    targets, reason = eligible_targets(text_job(max_tokens=100), None, "beta/org/big", cfg)
    assert keys_of(targets) == ["beta/org/big"]
    assert reason is None


def test_image_parts_need_a_vision_target(cfg: Config) -> None:
    targets, _ = eligible_targets(image_job(), "vision", None, cfg)
    assert keys_of(targets) == ["alpha/eye"]
    result = eligibility(image_job(), "fast", None, cfg)
    assert result.targets == []
    assert result.code == "no_vision_target"
    assert "tag 'fast'" in (result.reason or "")


def test_pinned_non_vision_target_refuses_images(cfg: Config) -> None:
    result = eligibility(image_job(), None, "alpha/small", cfg)
    assert result.code == "no_vision_target"
    assert "'alpha/small' is not vision-capable" in (result.reason or "")


def test_context_window_skips_small_targets(cfg: Config) -> None:
    body = text_job("x" * 3300, max_tokens=10)  # ~1100 tokens estimated: > 1000
    targets, _ = eligible_targets(body, "fast", None, cfg)
    assert keys_of(targets) == ["beta/org/big"]


def test_prompt_larger_than_every_window(cfg: Config) -> None:
    body = text_job("x" * 400_000, max_tokens=10)
    result = eligibility(body, "fast", None, cfg)
    assert result.code == "too_large"
    est = estimate_prompt_tokens(body["messages"], cfg.settings.quota)
    assert result.reason is not None and f"~{est} tokens" in result.reason


@pytest.mark.parametrize("margin, fits", [(0, False), (1, True), (50, True)])
def test_context_window_boundary(tmp_path: Path, margin: int, fits: bool) -> None:
    body = text_job("y" * 600, max_tokens=10)
    est = estimate_prompt_tokens(body["messages"], load_config("config").settings.quota)
    cfg = make_config(tmp_path, small_ctx=est + margin)
    targets, _ = eligible_targets(body, "fast", None, cfg)
    assert ("alpha/small" in keys_of(targets)) is fits


def test_token_limit_excludes_target(cfg: Config) -> None:
    # alpha/small: 1000 tokens/minute; prompt + 1500 can never fit it.
    targets, _ = eligible_targets(text_job(max_tokens=1500), "fast", None, cfg)
    assert keys_of(targets) == ["beta/org/big"]


def test_max_tokens_no_limit_admits(cfg: Config) -> None:
    result = eligibility(text_job(max_tokens=5000), "fast", None, cfg)
    assert result.code == "max_tokens_too_large"
    assert result.reason is not None
    assert "alpha/small: 1000 tokens/minute" in result.reason
    assert "max_tokens 2000" in result.reason  # what would be sent: capped by the model


@pytest.mark.parametrize("extra, fits", [(0, True), (1, False)])
def test_neuron_limit_in_milli_neurons(cfg: Config, extra: int, fits: bool) -> None:
    # beta/org/big costs 1 neuron per token; its provider allows 3000 neurons a day.
    msgs = [{"role": "user", "content": "hi"}]
    prompt = estimate_prompt_tokens(msgs, cfg.settings.quota)
    body = {"messages": msgs, "max_tokens": 3000 - prompt + extra}
    targets, _ = eligible_targets(body, "reasoning", None, cfg)
    assert bool(targets) is fits


def test_default_max_tokens_counts_when_job_sets_none(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, settings="jobs: {default_max_tokens: 1500}\n")
    targets, _ = eligible_targets(text_job(), "fast", None, cfg)
    assert keys_of(targets) == ["beta/org/big"]


def test_disabled_provider_is_skipped(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALPHA_KEY")
    targets, _ = eligible_targets(text_job(max_tokens=10), "fast", None, cfg)
    assert keys_of(targets) == ["beta/org/big"]


def test_all_disabled_names_the_variables(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALPHA_KEY")
    monkeypatch.delenv("BETA_ACCOUNT")
    result = eligibility(text_job(max_tokens=10), "fast", None, cfg)
    assert result.code == "no_target"
    assert result.reason == (
        "no enabled target for tag 'fast': provider alpha is disabled: ALPHA_KEY is not set; "
        "provider beta is disabled: BETA_ACCOUNT is not set"
    )
    assert result.missing_env == ("ALPHA_KEY", "BETA_ACCOUNT")


def test_pinned_disabled_target(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BETA_KEY")
    targets, reason = eligible_targets(text_job(max_tokens=10), None, "beta/org/big", cfg)
    assert targets == []
    assert reason == (
        "pinned target 'beta/org/big' cannot be used: provider beta is disabled: "
        "BETA_KEY is not set"
    )


def test_static_reason_wins_over_disabled(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALPHA_KEY")
    monkeypatch.delenv("BETA_KEY")
    assert eligibility(image_job(), "fast", None, cfg).code == "no_vision_target"


def test_simulation_enables_every_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("ALPHA_KEY", "BETA_KEY", "BETA_ACCOUNT"):
        monkeypatch.delenv(var)
    cfg = make_config(tmp_path, simulate=True)
    targets, _ = eligible_targets(text_job(max_tokens=10), "fast", None, cfg)
    assert keys_of(targets) == ["alpha/small", "beta/org/big"]


def test_paid_models_skipped_unless_allowed(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "free")
    body = text_job(max_tokens=10)
    assert keys_of(eligible_targets(body, "mixed", None, cfg)[0]) == ["alpha/small"]
    result = eligibility(body, "paidonly", None, cfg)
    assert result.code == "no_target"
    assert "beta/pricey is a paid model" in (result.reason or "")

    paid = make_config(tmp_path / "paid", settings="allow_paid: true\n")
    assert keys_of(eligible_targets(body, "mixed", None, paid)[0]) == [
        "beta/pricey",
        "alpha/small",
    ]


def test_empty_route(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    result = eligibility(text_job(), "bulk", None, cfg)  # built-in tag, no targets
    assert result.code == "no_target"
    assert "has no targets" in (result.reason or "")


def test_unknown_tag_or_target_raises(cfg: Config) -> None:
    with pytest.raises(KeyError):
        eligible_targets(text_job(), "nope", None, cfg)
    with pytest.raises(KeyError):
        eligible_targets(text_job(), None, "alpha/missing", cfg)


def test_shipped_config_routes_every_builtin_tag() -> None:
    cfg = load_config("config", simulate=True)
    for tag in ("fast", "reasoning", "bulk", "vision"):
        body = image_job() if tag == "vision" else text_job(max_tokens=64)
        targets, reason = eligible_targets(body, tag, None, cfg)
        assert targets, reason
        route = cfg.routes[tag]
        positions = [route.index(t.key) for t in targets]
        assert positions == sorted(positions)  # preference order kept


# --- choose_target ----------------------------------------------------------------


@pytest.mark.parametrize(
    "delays, expected",
    [
        ([0.0, 0.0], 0),  # both free: preferred
        ([1.9, 0.0], 0),  # preferred within the preference delay wins
        ([2.0, 0.0], 0),  # the bound is inclusive
        ([2.1, 0.0], 1),  # preferred too far off: soonest
        ([None, 5.0], 1),  # preferred cannot: the other
        ([9.0, 5.0, 7.0], 1),  # none within: soonest
        ([5.0, 9.0, 5.0], 0),  # tie on soonest: more preferred
        ([9.0, 5.0, 5.0], 1),
        ([None, 3.0, 1.0], 2),  # first within the delay, even if not soonest overall
        ([None, 1.0, 0.0], 1),
        ([None, None], None),
        ([], None),
    ],
)
def test_choose_target_cases(delays: list[float | None], expected: int | None) -> None:
    assert choose_target(delays, preference_delay_s=2.0) == expected


def test_choose_target_zero_preference_delay() -> None:
    assert choose_target([0.5, 0.0], preference_delay_s=0.0) == 1
    assert choose_target([0.0, 0.0], preference_delay_s=0.0) == 0


def test_choose_target_properties() -> None:
    rng = random.Random(1234)
    for _ in range(2000):
        n = rng.randint(0, 5)
        delays = [
            None if rng.random() < 0.3 else rng.choice([0.0, 1.0, 2.0, 3.0, rng.uniform(0, 10)])
            for _ in range(n)
        ]
        pref = rng.choice([0.0, 1.0, 2.0, 5.0])
        got = choose_target(delays, pref)
        available = [i for i, d in enumerate(delays) if d is not None]
        if not available:
            assert got is None
            continue
        assert got is not None and delays[got] is not None
        within = [i for i in available if delays[i] <= pref]  # type: ignore[operator]
        if within:
            assert got == within[0]  # no more preferred target was within the delay
        else:
            soonest = min(delays[i] for i in available)  # type: ignore[type-var]
            assert delays[got] == soonest
            assert got == min(i for i in available if delays[i] == soonest)
