"""Load the configuration directory into a validated :class:`Config`.

    >>> cfg = load_config("config")          # doctest: +SKIP
    >>> cfg.target("groq/llama-3.1-8b-instant").model.context_window   # doctest: +SKIP
    131072

Errors name the file, the key path and the reason; nothing starts on a bad config.
Garbage is refused the same way, never with a traceback: a file over
:data:`MAX_FILE_BYTES`, invalid UTF-8 or a NUL (with the line), nesting deeper than
:data:`MAX_DEPTH` (with the line), an integer of more than :data:`MAX_INT_CHARS`
characters, YAML aliases that expand past :data:`MAX_NODES` values, ``.inf``/``.nan``
(no setting takes them), and a value of the wrong type or out of range at any key path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dispatcher.config.models import (
    BUILTIN_TAGS,
    Limit,
    ModelConfig,
    ProviderConfig,
    ProvidersFile,
    RoutesFile,
    Schedule,
    SchedulesFile,
    Settings,
)
from dispatcher.config.secrets import looks_like_secret, register_key_env

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

MAX_FILE_BYTES = 4 * 2**20
"""Largest configuration file read (the shipped catalog is a few kB)."""
MAX_DEPTH = 32
"""Most levels of nesting in a configuration file (the schema needs 6)."""
MAX_INT_CHARS = 20
"""Longest integer literal (a 64-bit integer has at most 19 digits and a sign)."""
MAX_NODES = 1_000_000
"""Most values a file may expand to through YAML aliases (a "billion laughs" file
would otherwise take the loader's memory and time)."""


class ConfigError(Exception):
    """A configuration problem a user can fix: every message names file, key path, reason."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Target:
    """One provider/model pair: the unit routing and quota work on."""

    provider: str
    model: ModelConfig
    provider_config: ProviderConfig = field(repr=False, compare=False)

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model.id}"

    def limits(self) -> list[tuple[str, Limit]]:
        """Every limit that applies: ``("provider", limit)`` and ``("model", limit)``."""
        return [("provider", lim) for lim in self.provider_config.limits] + [
            ("model", lim) for lim in self.model.limits
        ]

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class ProviderStatus:
    enabled: bool
    reason: str | None
    base_url: str


def split_target(ref: str) -> tuple[str, str]:
    """``"nvidia/z-ai/glm4.7"`` -> ``("nvidia", "z-ai/glm4.7")`` (split at the first '/')."""
    provider, sep, model = ref.partition("/")
    if not sep or not provider or not model:
        raise ValueError(f"target {ref!r}: expected 'provider/model-id'")
    return provider, model


@dataclass
class Config:
    """The validated configuration directory plus what the environment says about it."""

    directory: Path
    providers: dict[str, ProviderConfig]
    routes: dict[str, list[str]]
    schedules: dict[str, Schedule]
    settings: Settings
    simulate: bool = False

    def target(self, ref: str) -> Target:
        provider, model_id = split_target(ref)
        pc = self.providers.get(provider)
        if pc is None:
            raise KeyError(f"unknown provider {provider!r} in target {ref!r}")
        model = pc.model(model_id)
        if model is None:
            raise KeyError(f"unknown model {model_id!r} of provider {provider!r}")
        return Target(provider, model, pc)

    def targets(self) -> list[Target]:
        return [Target(p, m, pc) for p, pc in self.providers.items() for m in pc.models]

    def route(self, tag: str) -> list[Target]:
        return [self.target(ref) for ref in self.routes[tag]]

    def status(self, provider: str) -> ProviderStatus:
        """Enabled, or why not. In simulation every provider is enabled."""
        pc = self.providers[provider]
        missing = [v for v in _VAR_RE.findall(pc.base_url) if not os.environ.get(v[0])]
        missing_base = [name for name, default in missing if not default]
        base_url = expand_vars(pc.base_url)
        if self.simulate:
            return ProviderStatus(True, None, base_url)
        if not os.environ.get(pc.api_key_env):
            return ProviderStatus(False, f"{pc.api_key_env} is not set", base_url)
        if missing_base:
            return ProviderStatus(False, f"{', '.join(missing_base)} is not set", base_url)
        return ProviderStatus(True, None, base_url)

    def enabled(self, provider: str) -> bool:
        return self.status(provider).enabled

    def usable(self, target: Target) -> bool:
        """Enabled, and free to use unless paid use is allowed."""
        paid = target.model.paid or target.provider_config.paid
        return self.enabled(target.provider) and (self.settings.allow_paid or not paid)

    def api_key(self, provider: str) -> str | None:
        """The key, read from the environment at the moment of use; never stored."""
        return os.environ.get(self.providers[provider].api_key_env)

    def limits_fingerprint(self) -> str:
        """A digest of every input of a charge: the limits (and the time zones that define
        calendar ones), each model's neuron rates and output caps, the 429 token setting,
        the default ``max_tokens``, the estimator's settings and the timing margins."""
        doc: dict[str, Any] = {
            name: {
                "tz": pc.timezone,
                "limits": [lim.model_dump(mode="json") for lim in pc.limits],
                "count_429_tokens": pc.count_429_tokens,
                "models": {
                    m.id: {"limits": [lim.model_dump(mode="json") for lim in m.limits],
                           **m.model_dump(mode="json", include={
                               "neurons", "max_output_tokens", "default_max_tokens"})}
                    for m in pc.models
                },
            }
            for name, pc in sorted(self.providers.items())
        }
        doc["(quota)"] = self.settings.quota.model_dump(mode="json")  # margins, estimator
        doc["(jobs)"] = {"default_max_tokens": self.settings.jobs.default_max_tokens}
        blob = json.dumps(doc, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def expand_vars(text: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` from the environment (unset -> empty)."""
    return _VAR_RE.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), text)


def config_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config DIR``, else ``$DISPATCH_CONFIG``, else ``./config``."""
    return Path(explicit or os.environ.get("DISPATCH_CONFIG") or "config")


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a repeated key (PyYAML silently keeps the last one,
    so a second ``limits:`` would drop the first list of limits), nesting deeper than
    :data:`MAX_DEPTH` (the composer recurses per level) and endless integers."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _bounded_int(loader: _UniqueKeyLoader, node: yaml.ScalarNode) -> int:
    size = len(str(node.value).replace("_", ""))
    if size > MAX_INT_CHARS:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of {size} characters (at most {MAX_INT_CHARS})",
            node.start_mark)
    return loader.construct_yaml_int(node)


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable key: let the default constructor report it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int)


def _line_col(text: str | bytes, offset: int) -> str:
    """`` (line L, column C)`` of a character (or byte) offset."""
    before = text[:offset]
    newline = "\n" if isinstance(before, str) else b"\n"
    line = before.count(newline) + 1  # type: ignore[arg-type]
    column = offset - (before.rfind(newline) + 1)  # type: ignore[arg-type]
    return f" (line {line}, column {column + 1})"


def _expanded_size(data: Any) -> tuple[int, int]:
    """(values, depth) of ``data`` as a reader sees it, with every alias expanded.

    Aliases make the loaded data a DAG whose expansion may be exponential: each shared
    node is measured once (memoised by identity), iteratively (no recursion).
    """
    memo: dict[int, tuple[int, int]] = {}
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in memo:
            continue
        kids = list(node.values()) if isinstance(node, dict) else \
            list(node) if isinstance(node, list) else []
        if not children_done and kids:
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in memo)
            continue
        sizes = [memo.get(id(k), (1, 0)) for k in kids]
        memo[id(node)] = (1 + sum(n for n, _ in sizes),
                          1 + max((d for _, d in sizes), default=0) if kids else 0)
    return memo.get(id(data), (1, 0))


def _read_yaml(path: Path, required: bool) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise ConfigError([f"{path}: file not found"])
        return {}
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{path.name}: cannot read: {exc.strerror or exc}"]) from exc
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([f"{path.name}: larger than {MAX_FILE_BYTES:,} bytes; "
                           "not a configuration file"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path.name}{_line_col(raw, exc.start)}: not valid UTF-8 "
                           f"(byte 0x{raw[exc.start]:02x})"]) from None
    nul = text.find("\x00")
    if nul >= 0:
        raise ConfigError([f"{path.name}{_line_col(text, nul)}: a NUL character"])
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.reader.ReaderError as exc:
        raise ConfigError([f"{path.name}{_line_col(text, exc.position)}: invalid YAML: "
                           f"{exc.reason} (character #x{exc.character:04x})"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path.name}{where}: invalid YAML: {problem}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path.name}: expected a mapping at the top level"])
    values, depth = _expanded_size(data)
    if values > MAX_NODES or depth > MAX_DEPTH:
        raise ConfigError([f"{path.name}: its aliases expand to "
                           + (f"more than {MAX_NODES:,} values" if values > MAX_NODES
                              else f"more than {MAX_DEPTH} levels of nesting")])
    return data


def _find_secrets(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _find_secrets(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _find_secrets(v, (*path, i))]
    if isinstance(node, str) and looks_like_secret(node):
        return [path]
    return []


def _validate(model: type[BaseModel], data: dict[str, Any], filename: str) -> Any:
    secrets = _find_secrets(data)
    if secrets:
        raise ConfigError(
            [
                f"{filename}: {_loc(p)}: looks like a literal API key or token; keys come "
                "only from the environment (name the variable with `api_key_env`)"
                for p in secrets
            ]
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (not part of the schema)"
            problems.append(f"{filename}: {_loc(err['loc'])}: {msg}")
        raise ConfigError(problems) from exc


def load_config(directory: str | os.PathLike[str] | None = None, simulate: bool = False) -> Config:
    """Read and validate the four YAML files (``settings.yaml``, ``schedules.yaml`` optional)."""
    d = config_dir(directory)
    if not d.is_dir():
        raise ConfigError([f"{d}: configuration directory not found"])
    providers = _validate(ProvidersFile, _read_yaml(d / "providers.yaml", True), "providers.yaml")
    routes = _validate(RoutesFile, _read_yaml(d / "routes.yaml", True), "routes.yaml")
    schedules = _validate(SchedulesFile, _read_yaml(d / "schedules.yaml", False), "schedules.yaml")
    settings = _validate(Settings, _read_yaml(d / "settings.yaml", False), "settings.yaml")

    cfg = Config(d, providers.providers, routes.routes, schedules.schedules, settings, simulate)
    problems = []
    for tag, refs in cfg.routes.items():
        for i, ref in enumerate(refs):
            try:
                cfg.target(ref)
            except (KeyError, ValueError) as exc:
                problems.append(f"routes.yaml: routes.{tag}[{i}]: {exc.args[0]}")
    for key in settings.prices:
        try:
            cfg.target(key)
        except (KeyError, ValueError) as exc:
            problems.append(f"settings.yaml: prices.{key}: {exc.args[0]}")
    if problems:
        raise ConfigError(problems)
    for tag in BUILTIN_TAGS:
        cfg.routes.setdefault(tag, [])
    register_key_env(pc.api_key_env for pc in cfg.providers.values())
    return cfg
