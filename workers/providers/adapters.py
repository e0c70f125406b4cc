"""One interface over the five providers' variants of the OpenAI chat dialect.

An :class:`Adapter` prepares a request body for its provider and classifies the answer
into an :mod:`outcome <workers.providers.outcomes>`. The providers differ only in data
(who a rate limit applies to, which header format, which parameters they reject, how
they name ``seed``), plus Cloudflare's v4 envelope; everything else is shared.

    >>> a = adapter_for("groq")
    >>> a.prepare({"messages": [], "max_completion_tokens": 9}, "llama-3.1-8b-instant", 256)
    {'messages': [], 'model': 'llama-3.1-8b-instant', 'max_tokens': 256}
    >>> a.classify(503, {}, b"upstream down")
    Transient(status=503, body='upstream down', message='HTTP 503: upstream down')
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, cast

from dispatcher import strict_json
from dispatcher.config.secrets import redact
from workers.providers import headers as hdr
from workers.providers.headers import Headers
from workers.providers.outcomes import (
    JobRejected,
    Observation,
    Outcome,
    RateLimited,
    RejectKind,
    Scope,
    Success,
    TargetRejected,
    Transient,
)

# Upstream error texts, lower-cased before matching. Order matters in _reject_kind.
_CONTEXT = re.compile(
    r"context_length_exceeded|maximum context|context length|context window|too many tokens"
    r"|prompt is too long|reduce the length of the messages"
)
_IMAGE = re.compile(r"image|vision|multimodal")
_NOT_SUPPORTED = re.compile(
    r"not supported|unsupported|does not support|doesn't support|not a multimodal|no endpoints"
    r"|only supports text"
)
_UNSUPPORTED_PARAM = re.compile(
    r"not supported|unsupported|is not allowed|not permitted|unrecognized|unknown parameter"
)
_DAILY = re.compile(r"per[ -]day|daily|\brpd\b|\btpd\b|month")  # Mistral: per month
_MODERATION = re.compile(r"moderation|flagged")
_TRANSIENT_4XX = frozenset({408, 409, 425, 498, 499})
_MAX_TEXT = 2000
USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
MAX_USAGE_TOKENS = 10**9
"""Most tokens one answer may report in a usage field; more is garbage (a context window
is at most a few million), and quota arithmetic must never see it."""


def usage_of(usage: Any) -> tuple[dict[str, Any] | None, str | None]:
    """``(usage, None)`` with its counts as ints, ``(None, None)`` when the answer has no
    usage, or ``(None, reason)`` when it is malformed: not an object, or a count that is
    not a whole number from 0 to :data:`MAX_USAGE_TOKENS` (a string, a list, a boolean,
    a negative, ``1e400``...). A malformed usage makes the answer malformed: quota must not
    be reconciled against a number nobody can trust.

        >>> usage_of({"prompt_tokens": 3, "completion_tokens": 2.0})
        ({'prompt_tokens': 3, 'completion_tokens': 2}, None)
        >>> usage_of({"prompt_tokens": "3"})[1]
        'usage.prompt_tokens is not a token count (a str)'
    """
    if usage is None:
        return None, None
    if not isinstance(usage, dict):
        return None, f"usage is not an object (a {type(usage).__name__})"
    clean = dict(usage)
    for name in USAGE_FIELDS:
        value = usage.get(name)
        if value is None:
            continue
        ok = not isinstance(value, bool) and isinstance(value, int | float) and \
            math.isfinite(value) and value == int(value) and 0 <= value <= MAX_USAGE_TOKENS
        if not ok:
            what = f"a {type(value).__name__}" if not isinstance(value, int | float) or \
                isinstance(value, bool) else repr(value)
            return None, f"usage.{name} is not a token count ({what})"
        clean[name] = int(value)
    return clean, None


def _error_fields(body: Any) -> tuple[str, Any] | None:
    """``(message, code)`` of an error body in any of the providers' shapes, else None.

    Shapes: OpenAI ``{"error": {...}}`` (or ``{"error": "text"}``), Mistral
    ``{"object": "error", ...}``, NVIDIA ``{"status": 429, "title": ...}``, Cloudflare
    ``{"success": false, "errors": [...]}``, FastAPI ``{"detail": ...}``.
    """
    if not isinstance(body, dict):
        return None
    err = body.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err.get("type") or err), err.get("code", err.get("type"))
    if isinstance(err, str) and err:
        return err, None
    errors = body.get("errors")
    if body.get("success") is False or (isinstance(errors, list) and errors and "result" in body):
        first = errors[0] if isinstance(errors, list) and errors else {}
        first = first if isinstance(first, dict) else {"message": str(first)}
        return str(first.get("message") or errors or "request failed"), first.get("code")
    if body.get("object") == "error" or "title" in body or "detail" in body:
        parts = [body.get(k) for k in ("title", "detail", "message")]
        text = ": ".join(str(p) for p in parts if p) or json.dumps(body)[:_MAX_TEXT]
        return text, body.get("code", body.get("type"))
    return None


def _status_of(code: Any) -> int | None:
    """An error's own ``code`` when it is an HTTP status (OpenRouter's errors in a 200)."""
    try:
        value = int(code)
    except (TypeError, ValueError, OverflowError):
        return None
    return value if 400 <= value <= 599 else None


def _normalise(body: dict[str, Any]) -> dict[str, Any]:
    """Expose reasoning as ``message["reasoning"]`` whichever key upstream used."""
    for choice in body.get("choices") or []:
        msg = choice.get("message") if isinstance(choice, dict) else None
        if (
            isinstance(msg, dict)
            and msg.get("reasoning") is None
            and msg.get("reasoning_content") is not None
        ):
            msg["reasoning"] = msg["reasoning_content"]
    return body


@dataclass(frozen=True)
class Adapter:
    """A provider dialect as data: the OpenAI behaviour unless a field says otherwise.

        >>> adapter_for("mistral").prepare({"seed": 7}, "mistral-small-latest", 64)
        {'model': 'mistral-small-latest', 'max_tokens': 64, 'random_seed': 7}
        >>> adapter_for("cloudflare").classify(
        ...     429, {}, b'{"success": false, "errors": [{"code": 3036, "message": "daily"}]}'
        ... ).daily
        True
    """

    name: str = "openai"
    scope: Scope = "provider"
    """Whom a 429 binds: the whole account, or only the model that was called."""
    header_format: str | None = None
    """Key of :data:`workers.providers.headers.OBSERVERS`; None when none are sent."""
    seed_field: str = "seed"
    max_tokens_fields: tuple[str, ...] = ("max_tokens",)
    rejected_params: tuple[str, ...] = ()
    """Request keys this provider answers with a 400 (checked up front by ``incompatibility``)."""
    rejects_message_name: bool = False
    single_choice: bool = False
    unsupported_hints: tuple[str, ...] = ()
    """Lower-case fragments of this provider's 400s that mean "parameter not supported"."""
    error_codes: dict[int, str] = field(default_factory=dict)
    """Provider error code -> ``"daily"``, ``"transient"`` or a :data:`RejectKind`."""
    model_scope_hint: str | None = None
    """A 429 message fragment meaning only the called model is limited (OpenRouter's
    "rate-limited upstream": one upstream host, not the account)."""

    # -- request -----------------------------------------------------------------------

    def prepare(self, body: dict[str, Any], model_id: str, max_tokens: int) -> dict[str, Any]:
        """A copy of ``body`` ready to send: ``model`` set, ``max_tokens`` as this provider
        expects it (the cap the quota layer counted, so no other name may contradict it),
        ``seed`` renamed where needed; streaming removed (answers are read whole)."""
        out = copy.deepcopy(body)
        out["model"] = model_id
        for name in ("max_tokens", "max_completion_tokens", "stream", "stream_options"):
            out.pop(name, None)
        for name in self.max_tokens_fields:
            out[name] = max_tokens
        if self.seed_field != "seed" and "seed" in out:
            out[self.seed_field] = out.pop("seed")
        return out

    def incompatibility(self, body: dict[str, Any]) -> str | None:
        """Why this provider would refuse ``body`` with a 400, or None — lets routing skip
        the target instead of spending quota on a certain rejection."""
        for name in self.rejected_params:
            if body.get(name) not in (None, False):
                return f"{self.name} does not support `{name}`"
        if self.single_choice and body.get("n") not in (None, 1):
            return f"{self.name} supports only n = 1"
        if self.rejects_message_name and any(
            isinstance(m, dict) and "name" in m for m in body.get("messages") or []
        ):
            return f"{self.name} does not support `messages[].name`"
        return None

    # -- response ----------------------------------------------------------------------

    def observations(self, status: int, headers: Headers | None) -> list[Observation]:
        """Remaining quota this answer's headers report (empty for most providers)."""
        return hdr.observations(self.header_format, headers)

    def classify(self, status: int, headers: Headers | None, content: bytes) -> Outcome:
        """Turn one HTTP answer into an outcome. Error texts are redacted: some
        providers echo part of the key back."""
        ok = 200 <= status < 300
        text = content.decode("utf-8", errors="replace")
        if not ok:
            text = redact(text)
        try:
            body: Any = strict_json.loads(text) if text.strip() else None
        except strict_json.JSONRefused:
            body = None  # malformed: a Transient when it was a 2xx
        if ok:
            return self._classify_ok(status, headers, body, text)
        raw: dict[str, Any] | str = body if isinstance(body, dict) else text[:_MAX_TEXT]
        fields = _error_fields(body)
        message, code = fields if fields else (text[:_MAX_TEXT].strip() or f"HTTP {status}", None)
        return self._classify_error(status, headers, raw, redact(message), code)

    def _unwrap(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def _classify_ok(
        self, status: int, headers: Headers | None, body: Any, text: str
    ) -> Outcome:
        if not isinstance(body, dict):
            snippet = text[:200].strip() or "empty body"
            message = f"malformed JSON in a {status}: {snippet}"
            return Transient(status, text[:_MAX_TEXT] or None, message)
        body = self._unwrap(body)
        fields = _error_fields(body)
        if fields is not None:  # an error inside a 200 (OpenRouter, Cloudflare envelope)
            message, code = fields
            err_status = _status_of(code)
            if err_status is None and self._special(code) is None:
                return Transient(status, body, redact(message))
            return self._classify_error(err_status or status, headers, body, redact(message), code)
        if not isinstance(body.get("choices"), list):
            return Transient(status, body, f"HTTP {status} without `choices`")
        usage, malformed = usage_of(body.get("usage"))
        if malformed:
            return Transient(status, body, f"malformed answer in a {status}: {malformed}")
        return Success(_normalise(body), usage, status)

    def _classify_error(
        self, status: int, headers: Headers | None, body: dict[str, Any] | str, message: str,
        code: Any,
    ) -> Outcome:
        special = self._special(code)
        if special == "transient":
            return Transient(status, body, message)
        if special == "daily" or (status == 429 and special is None):
            return self._rate_limited(status, headers, body, message, special == "daily")
        if special:
            return TargetRejected(status, body, cast(RejectKind, special), message)
        if status >= 500 or status in _TRANSIENT_4XX or status < 400:
            return Transient(status, body, f"HTTP {status}: {message}")
        kind = self._reject_kind(status, message.lower(), code)
        if kind is None:
            return JobRejected(status, body, message)
        return TargetRejected(status, body, kind, message)

    def _rate_limited(
        self, status: int, headers: Headers | None, body: dict[str, Any] | str, message: str,
        daily: bool,
    ) -> RateLimited:
        """Retry-After, else the message's hint, else the reset of an exhausted counter."""
        low = message.lower()
        retry = hdr.parse_retry_after(headers) or hdr.retry_hint(message)
        if retry is None:
            resets = [o.reset_s for o in self.observations(status, headers)
                      if o.remaining <= 0 and o.reset_s is not None]
            retry = hdr.capped_retry(max(resets)) if resets else None
        hint = self.model_scope_hint
        scope: Scope = "model" if hint and hint in low else self.scope
        return RateLimited(status, body, retry, scope, daily or bool(_DAILY.search(low)), message)

    def _reject_kind(self, status: int, low: str, code: Any) -> RejectKind | None:
        if status == 403 and _MODERATION.search(low):
            return None  # OpenRouter: the input was flagged; the key is fine
        if status in (401, 402, 403):  # 402: the account cannot pay (OpenRouter credits)
            return "auth"
        if status == 413:
            return "too_large"
        if _CONTEXT.search(low) or str(code) == "context_length_exceeded":
            return "context_overflow"
        if _IMAGE.search(low) and _NOT_SUPPORTED.search(low):
            return "no_vision"
        if "content" in low and "must be a string" in low:  # Groq, image parts on a text model
            return "no_vision"
        if status == 404:
            return "not_found"
        if _UNSUPPORTED_PARAM.search(low) or any(h in low for h in self.unsupported_hints):
            return "unsupported_param"
        return None

    def _special(self, code: Any) -> str | None:
        try:
            return self.error_codes.get(int(code))
        except (TypeError, ValueError, OverflowError):
            return None


@dataclass(frozen=True)
class CloudflareAdapter(Adapter):
    """Cloudflare may wrap an OpenAI-shaped answer in its v4 envelope ``{"result": ...}``.

        >>> adapter_for("cloudflare").classify(
        ...     200, {}, b'{"success": true, "result": {"choices": []}}').body
        {'choices': []}
    """

    inline_images: bool = True
    """Fetch http(s) images and send them as data URIs (Llama 4 Scout takes no URLs)."""

    def prepare(self, body: dict[str, Any], model_id: str, max_tokens: int) -> dict[str, Any]:
        """As every provider, plus http(s) images inlined (capped by the setting
        ``catalog.inline_image_max_bytes``; raises ImageInlineError beyond it)."""
        from workers.providers.images import inline_images

        out = super().prepare(body, model_id, max_tokens)
        return inline_images(out, _inline_cap()) if self.inline_images else out

    def _unwrap(self, body: dict[str, Any]) -> dict[str, Any]:
        result = body.get("result")
        if "choices" not in body and body.get("success") is not False and isinstance(result, dict):
            return result
        return body


def _inline_cap() -> int:
    """The configured inline-image cap of this process (the default outside a worker)."""
    from workers.providers.images import DEFAULT_MAX_BYTES

    try:
        from workers.runtime import get_runtime

        return get_runtime().config.settings.catalog.inline_image_max_bytes
    except Exception:  # noqa: BLE001 - no runtime (a bare adapter): the documented default
        return DEFAULT_MAX_BYTES


ADAPTERS: dict[str, Adapter] = {
    "openai": Adapter(),
    "groq": Adapter(
        "groq",
        scope="model",
        header_format="groq",
        rejected_params=("logprobs", "logit_bias", "top_logprobs"),
        rejects_message_name=True,
        single_choice=True,
        unsupported_hints=("logprobs", "logit_bias", "'name'", "`name`", "'n'", "`n`"),
    ),
    "openrouter": Adapter("openrouter", header_format="openrouter", model_scope_hint="upstream"),
    "cloudflare": CloudflareAdapter(
        "cloudflare", error_codes={3036: "daily", 3040: "transient", 5007: "not_found"}
    ),
    "mistral": Adapter("mistral", header_format="mistral", seed_field="random_seed"),
    "nvidia": Adapter("nvidia"),
}


def adapter_for(dialect: str) -> Adapter:
    """The adapter for a ``ProviderConfig.dialect``; unknown names get plain OpenAI."""
    return ADAPTERS.get(dialect, ADAPTERS["openai"])


def refusal(target: Any, body: dict[str, Any]) -> str | None:
    """Why ``target``'s provider would certainly refuse ``body`` (``n > 1`` on Groq, a
    parameter its dialect rejects), or None. The one check every routing decision asks —
    validation, the pump's target choice, a call task before it takes quota — so such a
    job routes past the target without costing it a request."""
    return adapter_for(target.provider_config.dialect).incompatibility(body)
