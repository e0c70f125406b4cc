"""The shipped catalog names where each routed target's figures come from.

A figure without a source cannot be checked again when a provider changes its tier; this
test fails when a routed model's block in ``providers.yaml`` carries no source comment
(the provider's docs, or "unconfirmed" for third-party-only figures) with a date.
"""

from __future__ import annotations

import re

from dispatcher.config import load_config
from tests.conftest import SHIPPED_CONFIG

SOURCE = re.compile(r"#.*\b(docs|unconfirmed|third-party|pricing)\b")
DATE = re.compile(r"20\d\d-\d\d")


def _blocks(text: str) -> dict[tuple[str, str], list[str]]:
    """``(provider, model id)`` -> the model's lines in providers.yaml, plus its provider's
    header comment lines (a figure shared by every model may be sourced there)."""
    blocks: dict[tuple[str, str], list[str]] = {}
    provider, header, current = "", [], None
    for line in text.splitlines():
        m = re.match(r"^  ([a-z0-9_-]+):\s*$", line)
        if m:
            provider, current = m.group(1), None
            continue
        if re.match(r"^  #", line) and current is None:
            header.append(line)
            continue
        m = re.match(r"^      - id: \"?([^\"#\s]+)\"?(.*)$", line)
        if m:
            current = (provider, m.group(1))
            blocks[current] = [line]
            continue
        if current is not None and line.startswith("        "):
            blocks[current].append(line)
        elif re.match(r"^  # -+", line):
            header, current = [line], None
    return blocks


def test_every_routed_model_names_its_source_and_date() -> None:
    cfg = load_config(SHIPPED_CONFIG)
    blocks = _blocks((SHIPPED_CONFIG / "providers.yaml").read_text(encoding="utf-8"))
    routed = {t.key: t for tag in cfg.routes for t in cfg.route(tag)}
    assert routed
    for key, target in routed.items():
        lines = blocks.get((target.provider, target.model.id))
        assert lines, f"{key}: no model block found in providers.yaml"
        sourced = [ln for ln in lines if SOURCE.search(ln)]
        assert sourced, f"{key}: no source comment (docs / unconfirmed) in its block"
        assert any(DATE.search(ln) for ln in sourced), f"{key}: its source has no date"


def test_every_routed_model_limit_line_is_sourced() -> None:
    """A model's own limits (Groq's per-model RPM/RPD/TPM/TPD) carry a source nearby."""
    cfg = load_config(SHIPPED_CONFIG)
    blocks = _blocks((SHIPPED_CONFIG / "providers.yaml").read_text(encoding="utf-8"))
    for tag in cfg.routes:
        for target in cfg.route(tag):
            if not target.model.limits:
                continue
            lines = blocks[(target.provider, target.model.id)]
            start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("limits:"))
            near = lines[max(0, start - 4): start + 1]
            assert any(SOURCE.search(ln) for ln in near), f"{target.key}: limits unsourced"
