"""OpenClaw's ``openclaw.json`` (JSON5) → ``providers.yaml`` entries, and back as a snippet.

Pure functions: :func:`read_openclaw` parses and checks the file, :func:`convert` maps
``models.providers`` to our providers (``baseUrl`` → ``base_url``; each model's
``contextWindow``/``contextTokens``, ``maxTokens``, ``reasoning``, ``input`` containing
``"image"`` → ``vision``; provider-level ``contextWindow``/``maxTokens`` as defaults), and
:func:`dispatch_snippet` is the OpenClaw provider that points at ``dispatch serve``.

Keys are never copied: ``apiKey: "${VAR}"`` (or ``${VAR:-default}``) keeps ``VAR`` as
``api_key_env``; anything else becomes ``<PROVIDER>_API_KEY`` and only its *name* is
reported. Error messages carry line, column and key paths, never file content (a parse
error next to a literal key must not print it).

    >>> env_name_of("${GROQ_KEY}", "groq")
    ('GROQ_KEY', 'reference')
    >>> env_name_of("gsk_live_123", "z.ai")
    ('Z_AI_API_KEY', 'literal')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import json5

SUPPORTED_API = "openai-completions"
_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}$")
_VAR_DEFAULT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-[^}]*\}")
_POSITION = re.compile(r":(\d+)\b.*?column (\d+)")
DIALECTS = {"groq.com": "groq", "openrouter.ai": "openrouter", "cloudflare.com": "cloudflare",
            "mistral.ai": "mistral", "nvidia.com": "nvidia"}


class OpenClawError(ValueError):
    """The file cannot be imported; the message names the line or key path."""


@dataclass
class Imported:
    """What :func:`convert` produced: the providers, the key variables, what was skipped."""

    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    """Variable name → ``reference`` (named in the file), ``literal`` (a key was in the
    file: set the variable to it, and remove it from openclaw.json) or ``missing``."""
    skipped: list[str] = field(default_factory=list)
    routes: dict[str, list[str]] = field(default_factory=dict)
    """OpenClaw's own primary + fallbacks, as a suggested route."""


def read_openclaw(text: str) -> dict[str, Any]:
    try:
        doc = json5.loads(text)
    except ValueError as exc:
        m = _POSITION.search(str(exc))
        where = f" at line {m.group(1)}, column {m.group(2)}" if m else ""
        raise OpenClawError(f"not valid JSON5{where}") from None
    if not isinstance(doc, dict):
        raise OpenClawError("the top level must be an object")
    providers = (doc.get("models") or {}).get("providers") if isinstance(
        doc.get("models"), dict) else None
    if not isinstance(providers, dict) or not providers:
        raise OpenClawError("models.providers: missing or empty (nothing to import)")
    return doc


def provider_name(raw: str) -> str:
    """Our provider name rule: lowercase letters, digits, '-' and '_'."""
    name = re.sub(r"[^a-z0-9_-]+", "-", raw.lower()).strip("-")
    return name or "provider"


def env_name_of(api_key: Any, provider: str) -> tuple[str, str]:
    """``(variable name, how it was found)`` for a provider's ``apiKey`` value."""
    if isinstance(api_key, str):
        m = _REF.match(api_key.strip())
        if m:
            return m.group(1), "reference"
    stem = re.sub(r"[^A-Z0-9]+", "_", provider.upper()).strip("_")
    if not stem or stem[0].isdigit():  # a variable name cannot start with a digit
        stem = "P_" + stem
    default = stem.rstrip("_") + "_API_KEY"
    return default, "missing" if api_key in (None, "") else "literal"


def dialect_for_url(base_url: str) -> str:
    host = urlsplit(base_url).hostname or ""
    return next((d for suffix, d in DIALECTS.items() if host.endswith(suffix)), "openai")


def _int(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise OpenClawError(f"{path}: expected a positive number")
    return int(value)


def _model(raw: Any, path: str, defaults: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise OpenClawError(f"{path}: expected an object")
    mid = raw.get("id")
    if not isinstance(mid, str) or not mid.strip():
        raise OpenClawError(f"{path}.id: missing or not a string")
    out: dict[str, Any] = {"id": mid.strip()}
    window = _int(raw.get("contextWindow", raw.get("contextTokens")), f"{path}.contextWindow") \
        or defaults.get("context_window")
    tokens = _int(raw.get("maxTokens"), f"{path}.maxTokens") or defaults.get("max_output_tokens")
    if window:
        out["context_window"] = window
    if tokens:
        out["max_output_tokens"] = tokens
    inputs = raw.get("input") or ["text"]
    if not isinstance(inputs, list):
        raise OpenClawError(f"{path}.input: expected a list such as [\"text\", \"image\"]")
    if "image" in inputs:
        out["vision"] = True
    if raw.get("reasoning") is True:
        out["reasoning"] = True
    return out


def convert(doc: dict[str, Any]) -> Imported:
    """Our providers from an OpenClaw document (see the module docstring)."""
    result = Imported()
    for raw_name, pc in doc["models"]["providers"].items():
        path = f"models.providers.{raw_name}"
        if not isinstance(pc, dict):
            raise OpenClawError(f"{path}: expected an object")
        api = pc.get("api", SUPPORTED_API)
        if api != SUPPORTED_API:
            result.skipped.append(f"{raw_name}: api {api!r} (only {SUPPORTED_API!r} is "
                                  "OpenAI-compatible)")
            continue
        base = pc.get("baseUrl")
        if not isinstance(base, str) or not base.strip():
            raise OpenClawError(f"{path}.baseUrl: missing or not a string")
        name = provider_name(str(raw_name))
        var, how = env_name_of(pc.get("apiKey"), name)
        if result.env.get(var) != "literal":
            result.env[var] = how
        defaults = {"context_window": _int(pc.get("contextWindow", pc.get("contextTokens")),
                                           f"{path}.contextWindow"),
                    "max_output_tokens": _int(pc.get("maxTokens"), f"{path}.maxTokens")}
        models = pc.get("models")
        if not isinstance(models, list) or not models:
            raise OpenClawError(f"{path}.models: missing or empty")
        result.providers[name] = {
            "base_url": _VAR_DEFAULT.sub(r"${\1}", base.strip()),
            "api_key_env": var,
            "dialect": dialect_for_url(base),
            "limits": [],
            "models": [_model(m, f"{path}.models[{i}]", defaults) for i, m in enumerate(models)],
        }
    model_cfg = ((doc.get("agents") or {}).get("defaults") or {}).get("model") \
        if isinstance(doc.get("agents"), dict) else None
    if isinstance(model_cfg, dict):
        chain = [model_cfg.get("primary"), *(model_cfg.get("fallbacks") or [])]
        refs = [r for r in chain if isinstance(r, str) and "/" in r]
        ours = [f"{provider_name(r.split('/', 1)[0])}/{r.split('/', 1)[1]}" for r in refs]
        known = [r for r in ours if r.split("/", 1)[0] in result.providers]
        if known:
            result.routes["openclaw"] = known
    return result


def dispatch_snippet(tags: dict[str, dict[str, Any]], port: int = 8000) -> dict[str, Any]:
    """The OpenClaw config that makes ``dispatch serve`` one provider whose models are the
    tags (``tags``: tag → ``{contextWindow, maxTokens, reasoning, image}`` as known)."""
    models = []
    for tag, info in tags.items():
        m: dict[str, Any] = {"id": tag, "name": f"{tag} (llm-dispatch)",
                             "reasoning": bool(info.get("reasoning")),
                             "input": ["text", "image"] if info.get("image") else ["text"]}
        for key in ("contextWindow", "maxTokens"):
            if info.get(key):
                m[key] = info[key]
        models.append(m)
    first = next(iter(tags), "fast")
    return {
        "models": {"mode": "merge", "providers": {"dispatch": {
            "baseUrl": f"http://127.0.0.1:{port}/v1", "apiKey": "${DISPATCH_API_KEY}",
            "api": SUPPORTED_API, "models": models}}},
        "agents": {"defaults": {"model": {"primary": f"dispatch/{first}"}}},
    }


def tag_capabilities(cfg) -> dict[str, dict[str, Any]]:
    """Per tag of a loaded config: the smallest window and output cap of its targets (what
    every target can honour), reasoning and image input when every target has them."""
    out: dict[str, dict[str, Any]] = {}
    for tag in cfg.routes:
        targets = cfg.route(tag)
        if not targets:
            continue
        out[tag] = {"contextWindow": min(t.model.context_window for t in targets),
                    "maxTokens": min(t.model.max_output_tokens for t in targets),
                    "reasoning": all(t.model.reasoning for t in targets),
                    "image": all(t.model.vision for t in targets)}
    return out
