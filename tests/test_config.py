"""The shipped catalog and the configuration loader's refusals (file, key path, reason)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from dispatcher.config import BUILTIN_TAGS, Config, ConfigError, load_config
from dispatcher.config.models import Unit

SHIPPED = Path(__file__).resolve().parent.parent / "config"
PROVIDERS = {"nvidia", "groq", "openrouter", "cloudflare", "mistral"}

# Obviously fake keys, assembled at runtime so no key-shaped literal sits in the repo.
FAKE_GROQ_KEY = "gsk_" + "A1b2" * 10
FAKE_NVIDIA_KEY = "nvapi-" + "Z9y8" * 10
FAKE_OPENROUTER_KEY = "sk-or-v1-" + "c3D4" * 12


pytestmark = pytest.mark.usefixtures("no_provider_keys")


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    """A writable copy of the shipped configuration directory."""
    d = tmp_path / "config"
    shutil.copytree(SHIPPED, d)
    return d


def edit(directory: Path, filename: str, change: Callable[[dict], None]) -> None:
    """Load a YAML file of ``directory``, let ``change`` mutate it, write it back."""
    path = directory / filename
    doc = yaml.safe_load(path.read_text()) if path.exists() else {}
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def problems(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(directory)
    assert info.value.problems, "a ConfigError must carry its problems"
    return info.value.problems


def groq_model(doc: dict, i: int = 0) -> dict:
    return doc["providers"]["groq"]["models"][i]


# ----------------------------------------------------------------- shipped config


def test_shipped_config_loads_with_no_keys() -> None:
    cfg = load_config(SHIPPED)
    assert set(cfg.providers) == PROVIDERS
    for tag in BUILTIN_TAGS:
        assert cfg.route(tag), f"tag {tag} has no target"
    for name, pc in cfg.providers.items():
        status = cfg.status(name)
        assert not status.enabled
        assert status.reason is not None and pc.api_key_env in status.reason
        assert not any(cfg.usable(t) for t in cfg.targets() if t.provider == name)


def test_shipped_routes_are_the_documented_ones() -> None:
    cfg = load_config(SHIPPED)
    assert cfg.routes["fast"] == [
        "groq/openai/gpt-oss-20b",
        "cloudflare/@cf/openai/gpt-oss-20b",
        "openrouter/openai/gpt-oss-20b:free",
    ]
    assert cfg.routes["reasoning"] == [
        "groq/openai/gpt-oss-120b",
        "nvidia/openai/gpt-oss-120b",
        "cloudflare/@cf/openai/gpt-oss-120b",
        "openrouter/nvidia/nemotron-3-super-120b-a12b:free",
        "cloudflare/@cf/deepseek-ai/deepseek-r1-distill-qwen-32b",
    ]
    assert cfg.routes["bulk"] == [
        "mistral/mistral-small-latest",
        "nvidia/meta/llama-3.3-70b-instruct",
    ]
    assert cfg.routes["vision"][0] == "cloudflare/@cf/google/gemma-4-26b-a4b-it"
    assert all(t.model.vision for t in cfg.route("vision"))


def test_shipped_catalog_has_the_models_users_rely_on() -> None:
    cfg = load_config(SHIPPED)
    ids = {name: {m.id for m in pc.models} for name, pc in cfg.providers.items()}
    assert {"openai/gpt-oss-120b", "meta/llama-3.3-70b-instruct"} <= ids["nvidia"]
    assert {"openai/gpt-oss-20b", "openai/gpt-oss-120b", "qwen/qwen3.6-27b"} <= ids["groq"]
    assert {"openai/gpt-oss-20b:free"} <= ids["openrouter"]
    assert {
        "@cf/openai/gpt-oss-120b",
        "@cf/openai/gpt-oss-20b",
        "@cf/meta/llama-3.1-8b-instruct-fp8-fast",
        "@cf/deepseek-ai/deepseek-r1-distill-qwen-32b",
        "@cf/google/gemma-4-26b-a4b-it",
    } <= ids["cloudflare"]
    assert ids["mistral"] == {
        "ministral-8b-latest",
        "mistral-small-latest",
        "mistral-medium-latest",
        "codestral-latest",
    }


#: Ids the providers retired or withdrew (notes/providers.md, late-2026 update).
RETIRED = {
    "groq/llama-3.1-8b-instant", "groq/meta-llama/llama-4-scout-17b-16e-instruct",
    "groq/qwen/qwen3-32b", "groq/llama-3.3-70b-versatile",
    "nvidia/moonshotai/kimi-k2-instruct", "nvidia/deepseek-ai/deepseek-v3.1",
    "nvidia/minimaxai/minimax-m2.1", "nvidia/z-ai/glm4.7",
    "openrouter/openai/gpt-oss-120b:free", "cloudflare/@cf/meta/llama-3.1-8b-instruct",
    "mistral/open-mistral-7b", "mistral/mistral-tiny",
}


def test_shipped_catalog_names_no_retired_id() -> None:
    cfg = load_config(SHIPPED)
    assert not RETIRED & {t.key for t in cfg.targets()}
    assert not RETIRED & set(cfg.settings.prices)


def test_every_shipped_tag_spans_two_providers() -> None:
    cfg = load_config(SHIPPED)
    for tag in cfg.routes:
        assert len({t.provider for t in cfg.route(tag)}) >= 2, tag


def test_shipped_limits_and_rates() -> None:
    cfg = load_config(SHIPPED)
    groq = cfg.target("groq/openai/gpt-oss-20b").model
    assert {(lim.unit, lim.limit, lim.per) for lim in groq.limits} == {
        ("requests", 30, "minute"),
        ("requests", 1000, "day"),
        ("tokens", 8000, "minute"),
        ("tokens", 200000, "day"),
    }
    cf = cfg.providers["cloudflare"]
    assert any(lim.unit is Unit.neurons and lim.limit == 10000 for lim in cf.limits)
    assert all(m.neurons is not None for m in cf.models)
    assert cfg.target("cloudflare/@cf/openai/gpt-oss-120b").model.neurons.input_per_million == 31818
    for t in cfg.targets():
        assert t.model.max_output_tokens <= t.model.context_window, t.key
        assert t.provider_config.timezone == "UTC"


def test_shipped_settings_price_every_routed_target() -> None:
    cfg = load_config(SHIPPED)
    routed = {ref for refs in cfg.routes.values() for ref in refs}
    assert routed <= set(cfg.settings.prices)
    assert cfg.settings.allow_paid is False


def test_no_shipped_model_is_paid() -> None:
    cfg = load_config(SHIPPED)
    assert not any(t.model.paid or t.provider_config.paid for t in cfg.targets())


# ------------------------------------------------------------- keys and ${VAR}


def test_a_set_key_enables_its_provider_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", FAKE_GROQ_KEY)
    cfg = load_config(SHIPPED)
    assert cfg.status("groq").enabled and cfg.status("groq").reason is None
    assert cfg.usable(cfg.target("groq/openai/gpt-oss-20b"))
    assert not cfg.status("nvidia").enabled
    assert cfg.api_key("groq") == FAKE_GROQ_KEY


def test_simulation_enables_every_provider() -> None:
    cfg = load_config(SHIPPED, simulate=True)
    assert all(cfg.status(name).enabled for name in cfg.providers)


def test_var_in_base_url_is_substituted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "not-a-real-token")
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "acct123")
    status = load_config(SHIPPED).status("cloudflare")
    assert status.enabled
    assert status.base_url == "https://api.cloudflare.com/client/v4/accounts/acct123/ai/v1"


def test_unset_var_in_base_url_disables_with_that_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "not-a-real-token")
    status = load_config(SHIPPED).status("cloudflare")
    assert not status.enabled
    assert status.reason == "CLOUDFLARE_ACCOUNT_ID is not set"


def test_var_default_is_used_when_unset(cfg_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", FAKE_GROQ_KEY)
    monkeypatch.delenv("GROQ_HOST", raising=False)

    def change(doc: dict) -> None:
        doc["providers"]["groq"]["base_url"] = "https://${GROQ_HOST:-api.groq.com}/openai/v1"

    edit(cfg_dir, "providers.yaml", change)
    status = load_config(cfg_dir).status("groq")
    assert status.enabled and status.base_url == "https://api.groq.com/openai/v1"


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            lambda d: groq_model(d).__setitem__("limts", groq_model(d).pop("limits")),
            "providers.yaml: providers.groq.models[0].limts: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            lambda d: groq_model(d)["limits"][0].__setitem__("unit", "requets"),
            "providers.yaml: providers.groq.models[0].limits[0].unit: Input should be",
            id="bad-unit",
        ),
        pytest.param(
            lambda d: groq_model(d)["limits"][0].__setitem__("per", "week"),
            "providers.yaml: providers.groq.models[0].limits[0].per: Input should be",
            id="bad-per",
        ),
        pytest.param(
            lambda d: groq_model(d)["limits"][0].__setitem__("limit", -5),
            "providers.yaml: providers.groq.models[0].limits[0].limit: "
            "Input should be greater than 0",
            id="negative-limit",
        ),
        pytest.param(
            lambda d: d["providers"]["groq"].pop("base_url"),
            "providers.yaml: providers.groq.base_url: Field required",
            id="missing-field",
        ),
        pytest.param(
            lambda d: groq_model(d).pop("id"),
            "providers.yaml: providers.groq.models[0].id: Field required",
            id="missing-model-id",
        ),
        pytest.param(
            lambda d: d["providers"]["groq"].__setitem__("timezone", "Mars/Olympus_Mons"),
            "providers.yaml: providers.groq.timezone: unknown time zone 'Mars/Olympus_Mons'",
            id="bad-timezone",
        ),
        pytest.param(
            lambda d: d["providers"]["groq"]["models"].append(dict(groq_model(d))),
            "providers.yaml: providers.groq: "
            "models[3].id: duplicate model id 'openai/gpt-oss-20b'",
            id="duplicate-model-id",
        ),
        pytest.param(
            lambda d: d["providers"]["groq"].__setitem__("api_key_env", "groq key"),
            "providers.yaml: providers.groq.api_key_env: must be the NAME of an environment",
            id="api-key-env-not-a-name",
        ),
        pytest.param(
            lambda d: d["providers"].__setitem__("Groq2", d["providers"]["groq"]),
            "providers.yaml: providers: provider name 'Groq2'",
            id="bad-provider-name",
        ),
        pytest.param(
            lambda d: d["providers"]["openrouter"]["models"].append({"id": "openai/gpt-4o"}),
            "providers.yaml: providers.openrouter: models[2] (openai/gpt-4o): an OpenRouter "
            "model without ':free' can bill; mark it `paid: true`",
            id="openrouter-not-free-not-paid",
        ),
        pytest.param(
            lambda d: d["providers"]["cloudflare"]["models"].append({"id": "@cf/qwen/qwq-32b"}),
            "providers.yaml: providers.cloudflare: models[6] (@cf/qwen/qwq-32b): a neurons "
            "limit applies but the model has no `neurons` rates",
            id="neurons-without-rates",
        ),
        pytest.param(
            lambda d: groq_model(d).update(default_max_tokens=10**6),
            "providers.yaml: providers.groq: models[0] (openai/gpt-oss-20b): "
            "default_max_tokens exceeds max_output_tokens",
            id="default-above-cap",
        ),
    ],
)
def test_providers_file_refusals(
    cfg_dir: Path, change: Callable[[dict], None], expected: str
) -> None:
    edit(cfg_dir, "providers.yaml", change)
    found = problems(cfg_dir)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("grok/openai/gpt-oss-20b", "routes.yaml: routes.fast[0]: unknown provider 'grok'"),
        ("groq/llama-9-instant", "routes.yaml: routes.fast[0]: unknown model 'llama-9-instant'"),
        ("gpt-oss-20b", "routes.yaml: routes.fast[0]: target 'gpt-oss-20b'"),
    ],
)
def test_route_refusals(cfg_dir: Path, ref: str, expected: str) -> None:
    edit(cfg_dir, "routes.yaml", lambda d: d["routes"]["fast"].__setitem__(0, ref))
    found = problems(cfg_dir)
    assert any(p.startswith(expected) for p in found), found


def test_every_route_problem_is_reported_at_once(cfg_dir: Path) -> None:
    def change(doc: dict) -> None:
        doc["routes"]["fast"] = ["nope/a", "groq/nope"]
        doc["routes"]["bulk"][1] = "mistral/nope"

    edit(cfg_dir, "routes.yaml", change)
    found = problems(cfg_dir)
    assert [p.split(":")[1].strip() for p in found] == [
        "routes.fast[0]",
        "routes.fast[1]",
        "routes.bulk[1]",
    ]


@pytest.mark.parametrize(
    ("filename", "change", "expected"),
    [
        pytest.param(
            "providers.yaml",
            lambda d: d["providers"]["groq"].__setitem__(
                "base_url", "https://api.groq.com/openai/v1?key=" + FAKE_GROQ_KEY
            ),
            "providers.yaml: providers.groq.base_url: looks like a literal API key",
            id="key-in-base-url",
        ),
        pytest.param(
            "providers.yaml",
            lambda d: d["providers"]["groq"].__setitem__("api_key_env", FAKE_GROQ_KEY),
            "providers.yaml: providers.groq.api_key_env: looks like a literal API key",
            id="key-as-api-key-env",
        ),
        pytest.param(
            "providers.yaml",
            lambda d: d["providers"]["nvidia"].__setitem__("api_key", FAKE_NVIDIA_KEY),
            "providers.yaml: providers.nvidia.api_key: looks like a literal API key",
            id="key-in-extra-field",
        ),
        pytest.param(
            "routes.yaml",
            lambda d: d["routes"]["fast"].append("openrouter/" + FAKE_OPENROUTER_KEY),
            "routes.yaml: routes.fast[3]: looks like a literal API key",
            id="key-in-routes",
        ),
        pytest.param(
            "settings.yaml",
            lambda d: d.__setitem__("token", "Bearer " + "Q7w8" * 8),
            "settings.yaml: token: looks like a literal API key",
            id="bearer-in-settings",
        ),
        pytest.param(
            "schedules.yaml",
            lambda d: d.__setitem__(
                "schedules",
                {"nightly": {"cron": "0 3 * * *", "jobs": [{"key": FAKE_GROQ_KEY}]}},
            ),
            "schedules.yaml: schedules.nightly.jobs[0].key: looks like a literal API key",
            id="key-in-schedules",
        ),
    ],
)
def test_literal_keys_are_refused(
    cfg_dir: Path, filename: str, change: Callable[[dict], None], expected: str
) -> None:
    edit(cfg_dir, filename, change)
    found = problems(cfg_dir)
    assert any(p.startswith(expected) for p in found), found
    for p in found:  # the refusal never repeats the key it found
        assert FAKE_GROQ_KEY not in p and FAKE_NVIDIA_KEY not in p and FAKE_OPENROUTER_KEY not in p


def test_a_generic_token_as_api_key_env_is_refused(cfg_dir: Path) -> None:
    token = "Ab3" * 12  # 36 characters mixing cases and digits: a key, not a variable name
    edit(
        cfg_dir,
        "providers.yaml",
        lambda d: d["providers"]["mistral"].__setitem__("api_key_env", token),
    )
    assert any(
        p.startswith("providers.yaml: providers.mistral.api_key_env: looks like")
        for p in problems(cfg_dir)
    )


def test_bad_cron_is_refused(cfg_dir: Path) -> None:
    def change(doc: dict) -> None:
        doc["schedules"] = {"nightly": {"cron": "61 * * * *", "batch": "in.jsonl"}}

    edit(cfg_dir, "schedules.yaml", change)
    found = problems(cfg_dir)
    assert any(
        p.startswith("schedules.yaml: schedules.nightly.cron: cron '61 * * * *'") for p in found
    ), found


def test_cron_needs_five_fields(cfg_dir: Path) -> None:
    edit(
        cfg_dir,
        "schedules.yaml",
        lambda d: d.__setitem__("schedules", {"hourly": {"cron": "0 * * *", "batch": "in.jsonl"}}),
    )
    assert any("expected 5 fields" in p for p in problems(cfg_dir))


def test_valid_schedule_loads(cfg_dir: Path) -> None:
    edit(
        cfg_dir,
        "schedules.yaml",
        lambda d: d.__setitem__(
            "schedules",
            {"nightly": {"cron": "30 2 * * 1-5", "timezone": "Europe/Paris", "batch": "in.jsonl"}},
        ),
    )
    assert load_config(cfg_dir).schedules["nightly"].timezone == "Europe/Paris"


def test_invalid_yaml_names_the_line(cfg_dir: Path) -> None:
    text = (cfg_dir / "routes.yaml").read_text()
    lines = text.splitlines()
    bad_line = next(i for i, line in enumerate(lines) if "bulk:" in line)
    lines[bad_line] = "\tbulk:"  # a tab cannot indent YAML
    (cfg_dir / "routes.yaml").write_text("\n".join(lines) + "\n")
    (found,) = problems(cfg_dir)
    assert found.startswith("routes.yaml (line ")
    assert "invalid YAML" in found
    line_no = int(found.split("(line ")[1].split(",")[0])
    assert line_no == bad_line + 1


def test_duplicate_yaml_key_is_refused(cfg_dir: Path) -> None:
    """PyYAML keeps the last of two equal keys: a repeated `limits:` would drop limits."""
    path = cfg_dir / "providers.yaml"
    text = path.read_text()
    marker = "    limits: []\n"  # groq's provider-level limits
    assert text.count(marker) == 1
    path.write_text(text.replace(marker, marker + "    limits: []\n"))
    (found,) = problems(cfg_dir)
    assert found.startswith("providers.yaml (line ") and "duplicate key 'limits'" in found


def test_invalid_utf8_is_a_config_error_with_its_line(cfg_dir: Path) -> None:
    (cfg_dir / "settings.yaml").write_bytes(b"jobs: {}\nallow_paid: \xff\xfe\n")
    (found,) = problems(cfg_dir)
    assert found == "settings.yaml (line 2, column 13): not valid UTF-8 (byte 0xff)"


def test_unreadable_file_is_a_config_error(cfg_dir: Path) -> None:
    (cfg_dir / "settings.yaml").unlink()
    (cfg_dir / "settings.yaml").mkdir()
    (found,) = problems(cfg_dir)
    assert found.startswith("settings.yaml: cannot read: ")


@pytest.mark.parametrize("text, expected", [
    (b"routes: " + b"[" * 10_000 + b"]" * 10_000, "routes.yaml (line 1, column "),
    (b"routes:\n  fast: [a\x00b]\n", "routes.yaml (line 2, column 11): a NUL character"),
    (b"routes:\n  fast: [a\x07b]\n", "routes.yaml (line 2, column 11): invalid YAML: "
     "special characters are not allowed"),
    (b"routes:\n  fast: " + b"9" * 5000 + b"\n", "routes.yaml (line 2, column 9): invalid "
     "YAML: an integer of 5000 characters (at most 20)"),
    (b"routes: {fast: 5}\n", "routes.yaml: routes.fast: Input should be a valid list"),
    (b"routes: {fast: [5]}\n", "routes.yaml: routes.fast[0]: Input should be a valid string"),
    (b"routes: 5\n", "routes.yaml: routes: Input should be a valid dictionary"),
    (b"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
     + b"".join(b"%c: &%c [%s]\n" % (c + 1, c + 1, b", ".join([b"*%c" % c] * 10))
                for c in range(ord("a"), ord("f"))),
     "routes.yaml: its aliases expand to more than 1,000,000 values"),
])
def test_garbage_in_a_config_file_is_refused_with_where_and_why(
        cfg_dir: Path, text: bytes, expected: str) -> None:
    (cfg_dir / "routes.yaml").write_bytes(text)
    found = problems(cfg_dir)
    assert found[0].startswith(expected), found
    if b"[[[" in text:
        assert "nested more than 32 levels deep" in found[0]


@pytest.mark.parametrize("setting, value, expected", [
    ("routing", {"preference_delay_s": float("inf")}, "routing.preference_delay_s: Input "
     "should be a finite number"),
    ("routing", {"horizon_s": float("nan")}, "routing.horizon_s: Input should be a finite"),
    ("jobs", {"max_lines": 10**15}, "jobs.max_lines: Input should be less than or equal"),
    ("jobs", {"max_line_bytes": 0}, "jobs.max_line_bytes: Input should be greater than 0"),
    ("jobs", {"max_attempts": "many"}, "jobs.max_attempts: Input should be a valid integer"),
    ("quota", {"chars_per_token": [3]}, "quota.chars_per_token: Input should be a valid num"),
])
def test_absurd_settings_are_refused_at_their_key_path(
        cfg_dir: Path, setting: str, value: dict, expected: str) -> None:
    (cfg_dir / "settings.yaml").write_text(yaml.safe_dump({setting: value}))
    (found,) = problems(cfg_dir)
    assert found.startswith(f"settings.yaml: {expected}")


def test_settings_refusals(cfg_dir: Path) -> None:
    def change(doc: dict) -> None:
        doc["routing"]["preference_delay"] = 3  # typo of preference_delay_s
        doc["prices"]["groq/llama-9"] = {"input_per_million": 1, "output_per_million": 1}

    edit(cfg_dir, "settings.yaml", change)
    found = problems(cfg_dir)
    assert any(
        p.startswith("settings.yaml: routing.preference_delay: unknown key") for p in found
    ), found
    edit(cfg_dir, "settings.yaml", lambda d: d["routing"].pop("preference_delay"))
    found = problems(cfg_dir)
    assert any(p.startswith("settings.yaml: prices.groq/llama-9: unknown model") for p in found)


def test_missing_files_and_directory(tmp_path: Path, cfg_dir: Path) -> None:
    with pytest.raises(ConfigError, match="configuration directory not found"):
        load_config(tmp_path / "nowhere")
    (cfg_dir / "routes.yaml").unlink()
    assert problems(cfg_dir) == [f"{cfg_dir / 'routes.yaml'}: file not found"]


def test_optional_files_may_be_absent(cfg_dir: Path) -> None:
    (cfg_dir / "settings.yaml").unlink()
    (cfg_dir / "schedules.yaml").unlink()
    cfg = load_config(cfg_dir)
    assert cfg.settings.jobs.default_max_tokens == 1024 and cfg.schedules == {}


def test_builtin_tags_always_exist_and_users_may_add_tags(cfg_dir: Path) -> None:
    edit(
        cfg_dir,
        "routes.yaml",
        lambda d: d.__setitem__("routes", {"code": ["mistral/codestral-latest"]}),
    )
    cfg = load_config(cfg_dir)
    assert set(cfg.routes) == {*BUILTIN_TAGS, "code"}
    assert cfg.routes["fast"] == []


def test_config_dir_comes_from_the_environment(
    cfg_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCH_CONFIG", str(cfg_dir))
    assert load_config().directory == cfg_dir


# ------------------------------------------------------------------------ paid


def _with_paid_model(cfg_dir: Path) -> None:
    edit(
        cfg_dir,
        "providers.yaml",
        lambda d: d["providers"]["openrouter"]["models"].append(
            {"id": "openai/gpt-4o-mini", "paid": True}
        ),
    )


def test_paid_models_are_flagged_and_skipped(
    cfg_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "not-a-real-key")
    _with_paid_model(cfg_dir)
    cfg = load_config(cfg_dir)
    paid = cfg.target("openrouter/openai/gpt-4o-mini")
    assert paid.model.paid
    assert cfg.enabled("openrouter") and not cfg.usable(paid)
    assert cfg.usable(cfg.target("openrouter/openai/gpt-oss-20b:free"))


def test_allow_paid_makes_paid_models_usable(
    cfg_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "not-a-real-key")
    _with_paid_model(cfg_dir)
    edit(cfg_dir, "settings.yaml", lambda d: d.__setitem__("allow_paid", True))
    cfg = load_config(cfg_dir)
    assert cfg.usable(cfg.target("openrouter/openai/gpt-4o-mini"))


def test_a_paid_provider_makes_all_its_models_paid(cfg_dir: Path) -> None:
    edit(cfg_dir, "providers.yaml", lambda d: d["providers"]["mistral"].__setitem__("paid", True))
    cfg: Config = load_config(cfg_dir, simulate=True)
    assert not any(cfg.usable(t) for t in cfg.route("bulk") if t.provider == "mistral")
    assert cfg.usable(cfg.target("nvidia/meta/llama-3.3-70b-instruct"))
