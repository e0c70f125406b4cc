"""Fake chat completions with honest, deterministic ``usage``.

Prompt tokens are counted the way real (byte-pair) tokenizers roughly count, by pieces
as their pre-tokenizers split text (:func:`count_text`): a word of Latin letters with its
leading space is one token per 5 letters, 4 in a word longer than 12 (English prose: about
4 characters a token),
digits go 3 to a token, a run of punctuation 2 to a token (code and JSON are denser than
prose), whitespace 4 to a token, a CJK character is one token and a rarer one (every
fourth code point) two, an emoji two tokens (joiners and variation selectors one each),
other scripts 2 letters a token. Plus 4 per message, 1000 per image, and the JSON of
``tools``, ``functions``, ``response_format`` and ``tool_choice``, which the model reads
too. ``n`` choices report ``n`` times the completion.

This is the upstream the dispatcher's estimate (workers/quota/textkinds.py, estimate.py)
must never fall below; it is deliberately not the same heuristic.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from dispatcher.config.models import ModelConfig
from workers.simulator.dialects import Dialect

DEFAULT_MAX_TOKENS = 256
_FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed",
           "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna")


class ChatError(Exception):
    """A request the provider would refuse with a 4xx: ``kind`` is a key of ``ERRORS``."""

    def __init__(self, kind: str, message: str, param: str | None = None):
        super().__init__(message)
        self.kind, self.message, self.param = kind, message, param


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, Any]]
    max_tokens: int
    prompt_tokens: int
    images: int
    choices: int = 1


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def neurons(self, model: ModelConfig) -> float:
        """Cloudflare neurons from the model's rates (exact, not rounded up)."""
        if model.neurons is None:
            return 0.0
        return (self.prompt_tokens * model.neurons.input_per_million
                + self.completion_tokens * model.neurons.output_per_million) / 1e6

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003ffff"
_EMOJI = ("\u2190-\u21ff\u2300-\u23ff\u25a0-\u27bf\u2b00-\u2bff\u200d\ufe00-\ufe0f"
          "\U0001f000-\U0001faff\U000e0000-\U000e007f")
_JOINERS = frozenset("\u200d\ufe0e\ufe0f")
_PIECES = re.compile(
    f"(?P<cjk>[{_CJK}])"
    f"|(?P<emoji>[{_EMOJI}])"
    "| ?(?P<word>[A-Za-z\u00c0-\u024f\u1e00-\u1eff]+)"
    "| ?(?P<num>[0-9]{1,3})"
    rf"| ?(?P<other>(?:(?![{_CJK}{_EMOJI}])[^\W\d_A-Za-z])+)"
    rf"|(?P<punct> ?(?:(?![{_CJK}{_EMOJI}])[^\s\w]|_)+)"
    r"|(?P<space>\s+)"
)
PROMPT_FIELDS = ("tools", "functions", "response_format", "tool_choice")
"""Request fields besides the messages that the model reads (rendered into its prompt)."""


def count_text(text: str) -> int:
    """Tokens of ``text``, the way a byte-pair tokenizer roughly counts (module docstring)."""
    tokens = 0
    for m in _PIECES.finditer(text):
        kind = m.lastgroup
        piece = m.group(kind)
        if kind == "cjk":
            tokens += 2 if ord(piece) % 4 == 0 else 1
        elif kind == "emoji":
            tokens += 1 if piece in _JOINERS else 2
        elif kind == "word":  # a long run of letters is rarely in the vocabulary
            tokens += math.ceil(len(piece) / (5 if len(piece) <= 12 else 4))
        elif kind == "num":
            tokens += 1
        elif kind == "other":
            tokens += math.ceil(len(piece) / 2)
        elif kind == "punct":
            tokens += math.ceil(len(piece.lstrip(" ")) / 2)
        else:
            tokens += math.ceil(len(piece) / 4)
    return tokens


def _content_tokens(content: Any) -> tuple[int, int]:
    """(text tokens, image parts) of one message's content."""
    if content is None:
        return 0, 0
    if isinstance(content, str):
        return count_text(content), 0
    if not isinstance(content, list):
        raise ChatError("bad_request", "message content must be a string or a list of parts",
                        "messages")
    tokens = images = 0
    for part in content:
        if not isinstance(part, dict) or "type" not in part:
            raise ChatError("bad_request", "each content part must be an object with a 'type'",
                            "messages")
        if part["type"] == "image_url":
            images += 1
        elif part["type"] == "text":
            tokens += count_text(str(part.get("text", "")))
    return tokens, images


def count_prompt(messages: list[dict[str, Any]],
                 body: dict[str, Any] | None = None) -> tuple[int, int]:
    """(prompt tokens, image parts) of ``messages`` and the prompt fields of ``body``,
    deterministically."""
    tokens = images = 0
    for m in messages:
        t, i = _content_tokens(m.get("content"))
        tokens += t
        images += i
        if m.get("name"):
            tokens += count_text(str(m["name"]))
        for key in ("tool_calls", "function_call"):
            if m.get(key):
                tokens += count_text(json.dumps(m[key], ensure_ascii=False))
    for key in PROMPT_FIELDS:
        if body and body.get(key) is not None:
            tokens += count_text(json.dumps(body[key], ensure_ascii=False))
    return tokens + 4 * len(messages) + 1000 * images, images


def parse_request(body: Any, model: ModelConfig, dialect: Dialect) -> ChatRequest:
    """Validate a chat-completions body as the provider would; raise :class:`ChatError`."""
    if not isinstance(body, dict):
        raise ChatError("bad_request", "request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ChatError("bad_request", "'messages' must be a non-empty array", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ChatError("bad_request", f"messages[{i}] must be an object with a 'role'",
                            "messages")
        if dialect.rejects_message_name and "name" in m:
            raise ChatError("unsupported_param", f"'messages.{i}' : for 'role:{m['role']}' the "
                            f"following must be satisfied[('messages.{i}.name' : property "
                            "'name' is unsupported)]", f"messages.{i}.name")
    for p in dialect.rejected_params:
        if body.get(p) not in (None, False):
            raise ChatError("unsupported_param", f"'{p}' : is not supported", p)
    if dialect.single_choice_only and body.get("n", 1) != 1:
        raise ChatError("unsupported_param", "'n' : number must be at most 1", "n")

    raw = body.get("max_completion_tokens", body.get("max_tokens"))
    if raw is None:
        max_tokens = DEFAULT_MAX_TOKENS
    elif isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise ChatError("bad_request", "max_tokens must be a positive integer", "max_tokens")
    elif raw > model.max_output_tokens:
        raise ChatError("bad_request", f"max_tokens must be less than or equal to "
                        f"{model.max_output_tokens}, the maximum value for this model",
                        "max_tokens")
    else:
        max_tokens = raw

    prompt_tokens, images = count_prompt(messages, body)
    if images and not model.vision:
        raise ChatError("bad_request", f"The model `{model.id}` does not support images "
                        "(image_url content parts); use a vision model", "messages")
    if prompt_tokens > model.context_window:
        raise ChatError("context", f"This model's maximum context length is "
                        f"{model.context_window} tokens. However, your messages resulted in "
                        f"{prompt_tokens} tokens. Please reduce the length of the messages.",
                        "messages")
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ChatError("bad_request", "n must be a positive integer", "n")
    return ChatRequest(messages, max_tokens, prompt_tokens, images, n)


def plan_usage(request: ChatRequest, reply_tokens: int) -> Usage:
    """What this request will report: known before answering, so quota judges it at arrival."""
    return Usage(request.prompt_tokens, min(request.max_tokens, reply_tokens) * request.choices)


def reply_text(label: str, tokens: int) -> str:
    """About ``tokens`` tokens (4 characters each) of deterministic text."""
    words = [f"Simulated reply from {label}."]
    size = len(words[0])
    i = 0
    while size + 6 <= tokens * 4:
        words.append(_FILLER[i % len(_FILLER)])
        size += len(words[-1]) + 1
        i += 1
    return " ".join(words)


def completion(request_id: str, provider: str, model: ModelConfig, request: ChatRequest,
               usage: Usage, dialect: Dialect) -> dict[str, Any]:
    """A ``chat.completion`` body in the provider's dialect."""
    each = usage.completion_tokens // request.choices
    message: dict[str, Any] = {"role": "assistant",
                               "content": reply_text(f"{provider}/{model.id}", each)}
    if model.reasoning and dialect.reasoning_field:
        message[dialect.reasoning_field] = "Simulated reasoning: nothing to think about."
    finish = "length" if each >= request.max_tokens else "stop"
    body: dict[str, Any] = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model.id,
        "choices": [{"index": 0, "message": message, "finish_reason": finish,
                     "logprobs": None}],
        "usage": usage.as_dict(),
        "system_fingerprint": "fp_simulator",
    }
    dialect.decorate(body, request_id)
    return body


def sse_answer(body: dict[str, Any], include_usage: bool, pieces: int = 4) -> bytes:
    """A completion as the Server-Sent Events a provider streams for ``"stream": true``:
    a role chunk, the content in ``pieces`` chunks, a finish chunk, then (when
    ``stream_options.include_usage``) a usage chunk with empty ``choices``, and
    ``data: [DONE]`` (OpenAI's chunk format)."""
    base = {k: body[k] for k in ("id", "created", "model", "system_fingerprint") if k in body}
    base["object"] = "chat.completion.chunk"
    choice = body["choices"][0]
    text = choice["message"].get("content") or ""
    step = max(1, math.ceil(len(text) / pieces))
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": text[i:i + step]} for i in range(0, len(text), step)]
    events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]}
              for d in deltas]
    events.append({**base, "choices": [{"index": 0, "delta": {},
                                        "finish_reason": choice["finish_reason"]}]})
    if include_usage:
        events.append({**base, "choices": [], "usage": body.get("usage")})
    out = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return out + b"data: [DONE]\n\n"
