"""``dispatch import-openclaw``: a seed-shaped openclaw.json with a fake literal key that
must not appear in any output (stdout, stderr, the written file)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from dispatcher.cli import app
from dispatcher.openclaw import dispatch_snippet, env_name_of, provider_name

FAKE_KEY = "test-key-openclaw-literal"

SEED = """// ~/.openclaw/openclaw.json (JSON5: comments, unquoted keys, trailing commas)
{
  models: {
    mode: "merge",
    providers: {
      nvidia: {
        baseUrl: "https://integrate.api.nvidia.com/v1",
        apiKey: "@KEY@",
        api: "openai-completions",
        models: [
          { id: "z-ai/glm4.7", name: "GLM 4.7", reasoning: true, input: ["text"],
            contextWindow: 200000, maxTokens: 16384, cost: { input: 0, output: 0 } },
          { id: "meta/llama-4-maverick", name: "Maverick", input: ["text", "image"],
            contextWindow: 131072, maxTokens: 4096, },
        ],
      },
      groq: {
        baseUrl: "https://api.groq.com/openai/v1",
        apiKey: "${GROQ_API_KEY}",
        api: "openai-completions",
        models: [{ id: "llama-3.1-8b-instant", contextWindow: 131072, maxTokens: 8192 }],
      },
      "Z.AI": {
        baseUrl: "https://api.z.ai/api/paas/v4",
        apiKey: "${ZAI_KEY:-@KEY@}",
        contextWindow: 128000,
        models: [{ id: "glm-4.5-flash" }],
      },
      anthropic: { baseUrl: "https://api.anthropic.com", apiKey: "@KEY@",
                   api: "anthropic-messages", models: [{ id: "claude" }] },
    },
  },
  agents: { defaults: { model: { primary: "nvidia/z-ai/glm4.7",
                                 fallbacks: ["groq/llama-3.1-8b-instant"] } } },
}
""".replace("@KEY@", FAKE_KEY)


def _run(*args: str):
    return CliRunner().invoke(app, ["import-openclaw", *args])


def test_import_writes_valid_providers_and_never_the_key(tmp_path: Path) -> None:
    src = tmp_path / "openclaw.json"
    src.write_text(SEED)
    out = tmp_path / "cfg" / "providers.yaml"
    out.parent.mkdir()
    result = _run(str(src), "-o", str(out), "--config", str(tmp_path / "none"))
    assert result.exit_code == 0, result.output
    written = out.read_text()
    for text in (result.stdout, result.stderr, written):
        assert FAKE_KEY not in text and "openclaw-literal" not in text
    doc = yaml.safe_load(written)["providers"]
    assert set(doc) == {"nvidia", "groq", "z-ai"}                       # anthropic skipped
    assert doc["nvidia"]["api_key_env"] == "NVIDIA_API_KEY"            # literal -> a name
    assert doc["groq"]["api_key_env"] == "GROQ_API_KEY"                # ${VAR} kept
    assert doc["z-ai"]["api_key_env"] == "ZAI_KEY"                     # ${VAR:-...} kept
    glm, maverick = doc["nvidia"]["models"]
    assert glm == {"id": "z-ai/glm4.7", "context_window": 200000, "max_output_tokens": 16384,
                   "reasoning": True}
    assert maverick["vision"] is True and "reasoning" not in maverick
    assert doc["z-ai"]["models"] == [{"id": "glm-4.5-flash", "context_window": 128000}]
    assert doc["nvidia"]["dialect"] == "nvidia" and doc["groq"]["dialect"] == "groq"
    assert "skipped anthropic" in result.stderr
    for var in ("NVIDIA_API_KEY", "GROQ_API_KEY", "ZAI_KEY"):
        assert var in result.stderr
    assert "#     openclaw:\n#     - nvidia/z-ai/glm4.7\n#     - groq/llama-3.1-8b-instant" \
        in written
    # the snippet: dispatch serve as one OpenClaw provider whose models are the tags
    snippet = json.loads(result.stderr[result.stderr.index("\n{\n"):])
    dispatch = snippet["models"]["providers"]["dispatch"]
    assert dispatch["baseUrl"] == "http://127.0.0.1:8000/v1"
    assert dispatch["api"] == "openai-completions"
    assert [m["id"] for m in dispatch["models"]] == ["fast", "reasoning", "bulk", "vision"]

    # the written file is a valid providers.yaml (with routes over the imported targets)
    from dispatcher.config import load_config

    (out.parent / "routes.yaml").write_text(yaml.safe_dump({"routes": {
        "fast": ["groq/llama-3.1-8b-instant"], "reasoning": ["nvidia/z-ai/glm4.7"],
        "bulk": ["z-ai/glm-4.5-flash"], "vision": ["nvidia/meta/llama-4-maverick"]}}))
    cfg = load_config(out.parent)
    assert cfg.target("nvidia/z-ai/glm4.7").model.context_window == 200000


def test_stdout_mode_and_the_snippet_from_a_configuration(tmp_path: Path) -> None:
    src = tmp_path / "openclaw.json"
    src.write_text(SEED)
    result = _run(str(src), "--config", "config", "--port", "8123")
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout)["providers"]["groq"]["models"][0]["id"] \
        == "llama-3.1-8b-instant"
    assert FAKE_KEY not in result.stdout + result.stderr
    snippet = json.loads(result.stderr[result.stderr.index("\n{\n"):])
    models = {m["id"]: m for m in snippet["models"]["providers"]["dispatch"]["models"]}
    assert models["vision"]["input"] == ["text", "image"]
    assert models["fast"]["contextWindow"] > 0
    assert snippet["models"]["providers"]["dispatch"]["baseUrl"].endswith(":8123/v1")


def test_bad_files_get_a_line_or_key_path_and_never_the_key(tmp_path: Path) -> None:
    cases = {
        "broken.json": ('{\n  models: {\n    providers: { x: { apiKey: "@KEY@" baseUrl: 1 } }\n',
                        "line 3"),
        "empty.json": ("{models: {}}", "models.providers"),
        "types.json": ('{models: {providers: {p: {baseUrl: "https://h/v1", apiKey: "@KEY@", '
                       'models: [{id: "m", maxTokens: "lots"}]}}}}',
                       "models.providers.p.models[0].maxTokens"),
        "nourl.json": ("{models: {providers: {p: {models: [{id: 'm'}]}}}}",
                       "models.providers.p.baseUrl"),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / name
        path.write_text(text.replace("@KEY@", FAKE_KEY))
        result = _run(str(path))
        assert result.exit_code == 2, (name, result.output)
        assert expected in result.stderr, (name, result.stderr)
        assert FAKE_KEY not in result.stdout + result.stderr
        assert "Traceback" not in result.output
    assert _run(str(tmp_path / "missing.json")).exit_code == 2


@given(st.text(max_size=30), st.text(max_size=40))
def test_names_are_valid_and_never_the_key(raw_provider: str, key: str) -> None:
    name = provider_name(raw_provider)
    assert re.fullmatch(r"[a-z0-9_-]+", name)
    var, how = env_name_of(key, name)
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var)
    if how != "reference":  # the name comes from the provider alone, never from the key
        assert var.endswith("_API_KEY")
        assert var == env_name_of("sk-something-else", name)[0]


def test_snippet_lists_the_tags_in_order() -> None:
    snip = dispatch_snippet({"a": {"contextWindow": 9}, "b": {"image": True}}, 9000)
    models = snip["models"]["providers"]["dispatch"]["models"]
    assert [m["id"] for m in models] == ["a", "b"] and models[0]["contextWindow"] == 9
    assert snip["agents"]["defaults"]["model"]["primary"] == "dispatch/a"
