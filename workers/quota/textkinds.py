"""What a request sends upstream, measured by kind of text: the input of the prompt estimate.

Pure functions, no Redis. Tokenizers count kinds of text very differently: English prose
is about 4 characters a token, code and JSON are denser, a CJK character or an emoji is
at least one token (often two or more). So the prompt is measured per kind — Latin prose,
code, CJK, emoji, other scripts, and JSON sent as tools/functions/response_format
("schema") — each at a conservative default rate (``settings.quota``: prose at
``chars_per_token``, the others in ``quota.estimator``); :mod:`workers.quota.estimate`
then scales each kind by what the upstream reported.

Everything the adapter sends counts: message text, roles, names, tool calls, and every
top-level field the model reads (tools, functions, response_format, ...); only sampling
parameters and delivery options are left out.

    >>> from dispatcher.config.models import QuotaSettings
    >>> f = prompt_features({"messages": [{"role": "user", "content": "你好 👋"}]},
    ...                     QuotaSettings())
    >>> f.chars["cjk"], f.chars["emoji"]
    (2, 1)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatcher.config.models import QuotaSettings

KINDS = ("latin", "code", "cjk", "emoji", "other", "schema")

#: Request fields that never reach the model's prompt (sampling and delivery options).
NOT_PROMPT = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
    "top_k", "min_p", "n", "seed", "random_seed", "stream", "stream_options", "stop",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias",
    "logprobs", "top_logprobs", "user", "metadata", "store", "parallel_tool_calls",
    "service_tier", "reasoning_effort", "safe_prompt", "prediction_mode",
})

_CJK = re.compile("[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
                  "\U00020000-\U0003ffff]")
_EMOJI = re.compile("[\u2190-\u21ff\u2300-\u23ff\u25a0-\u27bf\u2b00-\u2bff\u200d"
                    "\ufe00-\ufe0f\U0001f000-\U0001faff\U000e0000-\U000e007f]")
_LATIN_EXTRA = re.compile("[\u00a0-\u024f\u1e00-\u1eff\u2000-\u200c\u200e-\u206f]")
_CODE_CHARS = re.compile(r"[0-9!-/:-@\[-`{-~]")
_SPACE = re.compile(r"\s")
CODE_SHARE = 0.15
"""A text is code (or data) when digits and ASCII punctuation make this share of it."""
PART_OVERHEAD_CHARS = 8
"""Characters counted per content part (its framing), as the old estimate did."""


@dataclass(frozen=True)
class Features:
    """Characters of each kind, and the fixed tokens (per message, per image, priming)."""

    chars: Mapping[str, int]
    fixed: int

    def default_tokens(self, q: QuotaSettings) -> dict[str, float]:
        """Each kind's tokens at its conservative default rate."""
        rates = default_rates(q)
        return {k: self.chars.get(k, 0) * rates[k] for k in KINDS}


def default_rates(q: QuotaSettings) -> dict[str, float]:
    """Tokens per character of each kind before anything is learned."""
    e = q.estimator
    return {"latin": 1 / q.chars_per_token, "code": e.code_tokens_per_char,
            "cjk": e.cjk_tokens_per_char, "emoji": e.emoji_tokens_per_char,
            "other": e.other_tokens_per_char, "schema": e.schema_tokens_per_char}


def _add_text(acc: dict[str, int], text: str, kind: str | None = None) -> None:
    """Count ``text`` into ``acc``: CJK, emoji and other scripts by character; the rest
    (ASCII, Latin letters, general punctuation) as ``kind``, or as prose or code by its
    share of digits and punctuation."""
    if not text:
        return
    n = len(text)
    cjk = emoji = other = 0
    if not text.isascii():
        cjk = len(_CJK.findall(text))
        emoji = len(_EMOJI.findall(text))
        latin_extra = len(_LATIN_EXTRA.findall(text))
        ascii_n = sum(1 for ch in text if ch < "\x80")
        other = max(0, n - ascii_n - cjk - emoji - latin_extra)
    rest = n - cjk - emoji - other
    if kind is None:
        visible = n - len(_SPACE.findall(text))
        code = len(_CODE_CHARS.findall(text))
        kind = "code" if "```" in text or (visible and code >= CODE_SHARE * visible) \
            else "latin"
    acc[kind] += rest
    acc["cjk"] += cjk
    acc["emoji"] += emoji
    acc["other"] += other


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _content(acc: dict[str, int], content: Any) -> int:
    """Count a message's content; returns its number of image parts."""
    if content is None:
        return 0
    if isinstance(content, str):
        _add_text(acc, content)
        return 0
    if not isinstance(content, list):
        _add_text(acc, str(content))
        return 0
    images = 0
    for part in content:
        if not isinstance(part, dict):
            _add_text(acc, str(part))
        elif part.get("type") == "image_url":
            images += 1
        else:
            acc["latin"] += PART_OVERHEAD_CHARS
            if "text" in part:
                _add_text(acc, str(part.get("text", "")))
            else:  # an input part we do not know: count all of it
                _add_text(acc, _json(part), "schema")
    return images


def prompt_features(body: Mapping[str, Any], q: QuotaSettings) -> Features:
    """Measure everything of ``body`` that reaches the model's prompt."""
    acc = dict.fromkeys(KINDS, 0)
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        messages = []
    images = 0
    for m in messages:
        if not isinstance(m, dict):
            continue
        images += _content(acc, m.get("content"))
        acc["latin"] += len(str(m.get("role", ""))) + len(str(m.get("name", "") or ""))
        for key in ("tool_calls", "function_call", "tool_call_id"):
            if m.get(key):
                _add_text(acc, _json(m[key]), "schema")
    for key, value in body.items():
        if key not in NOT_PROMPT and value is not None:
            _add_text(acc, _json(value), "schema")
    fixed = q.message_overhead_tokens * len(messages) + images * q.image_tokens + 3
    return Features(acc, fixed)


def prompt_tokens(features: Features, q: QuotaSettings,
                  factors: Mapping[str, float] | None = None) -> int:
    """The prompt estimate: each kind at its default rate times its learned factor (1.0
    when nothing is learned), rounded up, plus the fixed part."""
    tokens = features.default_tokens(q)
    total = sum(t * (factors.get(k, 1.0) if factors else 1.0) for k, t in tokens.items())
    return math.ceil(total - 1e-9) + features.fixed


def count_images(messages: list[dict[str, Any]]) -> int:
    """Image parts in ``messages``."""
    acc = dict.fromkeys(KINDS, 0)
    return sum(_content(acc, m.get("content")) for m in messages if isinstance(m, dict))
