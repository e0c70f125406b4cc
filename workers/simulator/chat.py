"""Fake chat completions with honest, deterministic ``usage``.

Prompt tokens are counted as ``ceil(chars / 4) + 4 per message + 1000 per image``:
close to what real tokenizers report, and deliberately *below* the dispatcher's own
upper-bound estimate (workers/quota/costs.py counts chars / 3, 8 per message, 1600 per
image), so a correct reservation always covers what the simulator later reports.
"""

from __future__ import annotations

import json
import math
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


def _content_size(content: Any) -> tuple[int, int]:
    """(text characters, image parts) of one message's content."""
    if content is None:
        return 0, 0
    if isinstance(content, str):
        return len(content), 0
    if not isinstance(content, list):
        raise ChatError("bad_request", "message content must be a string or a list of parts",
                        "messages")
    chars = images = 0
    for part in content:
        if not isinstance(part, dict) or "type" not in part:
            raise ChatError("bad_request", "each content part must be an object with a 'type'",
                            "messages")
        if part["type"] == "image_url":
            images += 1
        elif part["type"] == "text":
            chars += len(str(part.get("text", "")))
    return chars, images


def count_prompt(messages: list[dict[str, Any]]) -> tuple[int, int]:
    """(prompt tokens, image parts), deterministically."""
    chars = images = 0
    for m in messages:
        c, i = _content_size(m.get("content"))
        chars += c
        images += i
        if m.get("tool_calls"):
            chars += len(json.dumps(m["tool_calls"]))
    return math.ceil(chars / 4) + 4 * len(messages) + 1000 * images, images


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

    prompt_tokens, images = count_prompt(messages)
    if images and not model.vision:
        raise ChatError("bad_request", f"The model `{model.id}` does not support images "
                        "(image_url content parts); use a vision model", "messages")
    if prompt_tokens > model.context_window:
        raise ChatError("context", f"This model's maximum context length is "
                        f"{model.context_window} tokens. However, your messages resulted in "
                        f"{prompt_tokens} tokens. Please reduce the length of the messages.",
                        "messages")
    return ChatRequest(messages, max_tokens, prompt_tokens, images)


def plan_usage(request: ChatRequest, reply_tokens: int) -> Usage:
    """What this request will report: known before answering, so quota judges it at arrival."""
    return Usage(request.prompt_tokens, min(request.max_tokens, reply_tokens))


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
    message: dict[str, Any] = {"role": "assistant",
                               "content": reply_text(f"{provider}/{model.id}",
                                                     usage.completion_tokens)}
    if model.reasoning and dialect.reasoning_field:
        message[dialect.reasoning_field] = "Simulated reasoning: nothing to think about."
    finish = "length" if usage.completion_tokens >= request.max_tokens else "stop"
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
