"""Request preparation and response classification for every dialect.

Bodies are shaped as providers.md documents them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from workers.providers.adapters import ADAPTERS, adapter_for
from workers.providers.outcomes import (
    JobRejected,
    RateLimited,
    Success,
    TargetRejected,
    Transient,
)

DIALECTS = sorted(ADAPTERS)


def j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def completion(**message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi", **message},
             "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def openai_error(message: str, type_: str = "invalid_request_error", code: Any = None) -> bytes:
    return j({"error": {"message": message, "type": type_, "param": None, "code": code}})


# -- prepare ---------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_prepare_copies_and_sets_model_and_max_tokens(dialect: str) -> None:
    body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 999, "stream": False}
    before = json.dumps(body)
    out = adapter_for(dialect).prepare(body, "upstream-id", 256)
    assert json.dumps(body) == before  # input untouched
    assert out["model"] == "upstream-id"
    assert out["max_tokens"] == 256
    assert "max_completion_tokens" not in out and "stream" not in out
    out["messages"][0]["content"] = "changed"
    assert body["messages"][0]["content"] == "hi"  # no shared nested objects


def test_prepare_seed_naming() -> None:
    assert adapter_for("mistral").prepare({"seed": 3}, "m", 8) == {
        "model": "m", "max_tokens": 8, "random_seed": 3}
    assert adapter_for("groq").prepare({"seed": 3}, "m", 8)["seed"] == 3


def test_adapter_for_unknown_is_openai() -> None:
    assert adapter_for("somebody-new").name == "openai"


def test_groq_incompatibility() -> None:
    groq, nvidia = adapter_for("groq"), adapter_for("nvidia")
    plain = {"messages": [{"role": "user", "content": "x"}]}
    assert groq.incompatibility(plain) is None
    assert "logprobs" in groq.incompatibility({**plain, "logprobs": True})
    assert "logit_bias" in groq.incompatibility({**plain, "logit_bias": {"1": 5}})
    assert "n = 1" in groq.incompatibility({**plain, "n": 2})
    assert groq.incompatibility({**plain, "n": 1}) is None
    named = {"messages": [{"role": "user", "content": "x", "name": "bob"}]}
    assert "name" in groq.incompatibility(named)
    assert nvidia.incompatibility({**named, "logprobs": True, "n": 2}) is None


# -- success ---------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_success_exposes_reasoning_from_either_key(dialect: str) -> None:
    a = adapter_for(dialect)
    out = a.classify(200, {}, j(completion(reasoning_content="because")))
    assert isinstance(out, Success)
    msg = out.body["choices"][0]["message"]
    assert msg["reasoning"] == "because" and msg["reasoning_content"] == "because"
    assert out.usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    out = a.classify(200, {}, j(completion(reasoning="why")))
    assert out.body["choices"][0]["message"]["reasoning"] == "why"
    out = a.classify(200, {}, j(completion()))
    assert "reasoning" not in out.body["choices"][0]["message"]


def test_openrouter_usage_cost_kept() -> None:
    body = completion()
    body["usage"]["cost"] = 0
    out = adapter_for("openrouter").classify(200, {}, j(body))
    assert isinstance(out, Success) and out.usage["cost"] == 0


def test_cloudflare_success_plain_or_wrapped() -> None:
    cf = adapter_for("cloudflare")
    plain = cf.classify(200, {}, j(completion()))
    wrapped = cf.classify(200, {}, j({"success": True, "errors": [], "messages": [],
                                      "result": completion()}))
    assert isinstance(plain, Success) and isinstance(wrapped, Success)
    assert wrapped.body == plain.body


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("content", [b"", b"<html>oops</html>", b'{"choices": [', b"[1, 2]",
                                     b'{"id": "x"}'])
def test_malformed_200_is_transient(dialect: str, content: bytes) -> None:
    out = adapter_for(dialect).classify(200, {}, content)
    assert isinstance(out, Transient) and out.status == 200


# -- errors inside a 200 ----------------------------------------------------------------


def test_openrouter_error_inside_200() -> None:
    o = adapter_for("openrouter")
    out = o.classify(200, {}, j({"error": {"code": 502, "message": "Provider returned error"}}))
    assert isinstance(out, Transient) and out.status == 502
    assert out.body == {"error": {"code": 502, "message": "Provider returned error"}}
    out = o.classify(200, {}, j({"error": {"code": 429, "message":
                                           "Rate limit exceeded: free-models-per-day"}}))
    assert isinstance(out, RateLimited) and out.daily and out.scope == "provider"
    out = o.classify(200, {}, j({"error": {"message": "something broke mid-stream"}}))
    assert isinstance(out, Transient)
    # an error key wins over choices
    out = o.classify(200, {}, j({**completion(), "error": {"code": 400, "message": "bad"}}))
    assert isinstance(out, JobRejected) and out.status == 400


def test_cloudflare_envelope_error_inside_200() -> None:
    cf = adapter_for("cloudflare")
    body = {"success": False, "result": None, "messages": [],
            "errors": [{"code": 3036, "message": "You have used up your daily free allocation "
                                                 "of 10,000 neurons, please upgrade"}]}
    out = cf.classify(200, {}, j(body))
    assert isinstance(out, RateLimited) and out.daily and out.scope == "provider"


# -- rate limits -----------------------------------------------------------------------

GROQ_TPM = (
    "Rate limit reached for model `llama-3.1-8b-instant` in organization `org_01` service tier "
    "`on_demand` on tokens per minute (TPM): Limit 6000, Used 5800, Requested 500. "
    "Please try again in 5.289s. Need more tokens? Upgrade to Dev Tier today."
)
GROQ_RPD = (
    "Rate limit reached for model `openai/gpt-oss-120b` in organization `org_01` service tier "
    "`on_demand` on requests per day (RPD): Limit 1000, Used 1000, Requested 1. "
    "Please try again in 1m26.4s."
)


def test_groq_429_tpm_uses_retry_after_then_message_hint() -> None:
    g = adapter_for("groq")
    body = openai_error(GROQ_TPM, "tokens", "rate_limit_exceeded")
    out = g.classify(429, {"retry-after": "6"}, body)
    assert isinstance(out, RateLimited)
    assert (out.retry_after_s, out.scope, out.daily) == (6.0, "model", False)
    assert out.body["error"]["code"] == "rate_limit_exceeded"
    out = g.classify(429, {}, body)
    assert out.retry_after_s == pytest.approx(5.289)


def test_groq_429_per_day_is_daily() -> None:
    out = adapter_for("groq").classify(429, {}, openai_error(GROQ_RPD, "requests",
                                                             "rate_limit_exceeded"))
    assert isinstance(out, RateLimited) and out.daily and out.scope == "model"
    assert out.retry_after_s == pytest.approx(86.4)


def test_openrouter_429_minute_and_day() -> None:
    o = adapter_for("openrouter")
    now_ms = 4_000_000_000_000  # far future, so the reset is "in the future"
    minute = o.classify(
        429, {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0",
              "X-RateLimit-Reset": str(now_ms)},
        j({"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min. ",
                     "metadata": {"headers": {}}}}),
    )
    assert isinstance(minute, RateLimited)
    assert not minute.daily and minute.scope == "provider"
    assert minute.retry_after_s is not None and minute.retry_after_s > 0  # from X-RateLimit-Reset
    day = o.classify(
        429, {"Retry-After": "3600"},
        j({"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-day. Add 10 "
                     "credits to unlock 1000 free model requests per day", "metadata": {}}}),
    )
    assert isinstance(day, RateLimited) and day.daily and day.retry_after_s == 3600.0


def test_openrouter_upstream_429_binds_the_model_only() -> None:
    out = adapter_for("openrouter").classify(429, {}, j({"error": {"code": 429, "message":
        "openai/gpt-oss-20b:free is temporarily rate-limited upstream. Please retry shortly"}}))
    assert isinstance(out, RateLimited) and out.scope == "model" and not out.daily


def test_cloudflare_3036_daily_and_3040_transient() -> None:
    cf = adapter_for("cloudflare")
    spent = {"success": False, "errors": [{"code": 3036, "message": "You have used up your "
             "daily free allocation of 10,000 neurons, please upgrade to Cloudflare's Workers "
             "Paid plan"}], "messages": [], "result": None}
    out = cf.classify(429, {}, j(spent))
    assert isinstance(out, RateLimited) and out.daily and out.scope == "provider"
    busy = {"success": False, "errors": [{"code": 3040, "message": "Capacity temporarily "
            "exceeded, please try again."}], "messages": [], "result": None}
    assert isinstance(cf.classify(429, {}, j(busy)), Transient)
    assert isinstance(cf.classify(503, {}, j(busy)), Transient)
    plain_429 = cf.classify(429, {}, j({"success": False, "errors": [{"code": 3035,
                                        "message": "too many requests"}]}))
    assert isinstance(plain_429, RateLimited) and not plain_429.daily


def test_mistral_429() -> None:
    m = adapter_for("mistral")
    body = j({"object": "error", "message": "Requests rate limit exceeded", "type": "rate_limited",
              "param": None, "code": "1300"})
    out = m.classify(429, {"ratelimitbysize-remaining": "0", "ratelimitbysize-reset": "12"}, body)
    assert isinstance(out, RateLimited)
    assert (out.scope, out.daily) == ("provider", False)
    assert out.message == "Requests rate limit exceeded"
    assert out.retry_after_s == 12.0  # from the exhausted counter's reset
    monthly = m.classify(429, {}, j({"object": "error", "message": "Tokens per month limit "
                                     "exceeded", "type": "rate_limited", "code": "1300"}))
    assert isinstance(monthly, RateLimited) and monthly.daily


def test_nvidia_429() -> None:
    out = adapter_for("nvidia").classify(429, {}, j({"status": 429, "title": "Too Many Requests"}))
    assert isinstance(out, RateLimited)
    assert (out.scope, out.daily, out.retry_after_s) == ("provider", False, None)
    assert out.message == "Too Many Requests"
    assert out.body == {"status": 429, "title": "Too Many Requests"}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_429_non_json(dialect: str) -> None:
    out = adapter_for(dialect).classify(429, {"Retry-After": "2"}, b"Too Many Requests")
    assert isinstance(out, RateLimited) and out.retry_after_s == 2.0
    assert out.body == "Too Many Requests"


# -- transient -------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("status", [500, 502, 503, 504, 529, 408, 409, 498])
def test_5xx_and_retryable_4xx_are_transient(dialect: str, status: int) -> None:
    out = adapter_for(dialect).classify(status, {}, openai_error("upstream overloaded", "server"))
    assert isinstance(out, Transient) and out.status == status
    assert "upstream overloaded" in out.message


# -- target rejected -------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("status", "content", "kind"),
    [
        (401, openai_error("Invalid API Key", "invalid_request_error", "invalid_api_key"), "auth"),
        (403, j({"status": 403, "title": "Forbidden", "detail": "key revoked"}), "auth"),
        (404, openai_error("The model `llama3-8b-8192` has been decommissioned",
                           code="model_not_found"), "not_found"),
        (413, openai_error("Request Entity Too Large", code="request_too_large"), "too_large"),
        (400, openai_error("Please reduce the length of the messages or completion.",
                           code="context_length_exceeded"), "context_overflow"),
        (400, openai_error("This model's maximum context length is 131072 tokens. However, you "
                           "requested 140000 tokens."), "context_overflow"),
        (400, j({"object": "error", "message": "Prompt contains 200000 tokens, too large for model "
                 "with 131072 maximum context length", "type": "invalid_request_error",
                 "code": "3051"}), "context_overflow"),
        (400, openai_error("Image input is not supported for this model"), "no_vision"),
        (404, j({"error": {"code": 404, "message": "No endpoints found that support image input"}}),
         "no_vision"),
        (400, openai_error("`logprobs` is not supported with this model"), "unsupported_param"),
        (422, j({"detail": "parameter 'top_k' is unsupported"}), "unsupported_param"),
    ],
)
def test_target_rejected(dialect: str, status: int, content: bytes, kind: str) -> None:
    out = adapter_for(dialect).classify(status, {}, content)
    assert isinstance(out, TargetRejected), out
    assert (out.status, out.kind) == (status, kind)
    assert isinstance(out.body, dict)


def test_groq_specific_rejections() -> None:
    g = adapter_for("groq")
    name = openai_error("'messages.0' : for 'role:user' the following must be satisfied"
                        "[('messages.0' : property 'name' is unsupported)]")
    assert g.classify(400, {}, name).kind == "unsupported_param"
    n = openai_error("'n' : number must be at most 1")
    assert g.classify(400, {}, n).kind == "unsupported_param"
    assert isinstance(adapter_for("nvidia").classify(400, {}, n), JobRejected)
    image = openai_error("'messages.1' : for 'role:user' the following must be satisfied"
                         "[('messages.1.content' : value must be a string)]")
    assert g.classify(400, {}, image).kind == "no_vision"
    too_big = g.classify(413, {}, openai_error("Request Entity Too Large"))
    assert too_big.kind == "too_large"


def test_cloudflare_unknown_model_is_not_found() -> None:
    body = j({"success": False, "errors": [{"code": 5007, "message": "No such model "
              "@cf/deepseek-ai/deepseek-r1-distill-32b or task"}], "result": None})
    out = adapter_for("cloudflare").classify(400, {}, body)
    assert isinstance(out, TargetRejected) and out.kind == "not_found"


def test_openrouter_402_and_moderation() -> None:
    o = adapter_for("openrouter")
    credits = o.classify(402, {}, j({"error": {"code": 402, "message": "Insufficient credits"}}))
    assert isinstance(credits, TargetRejected) and credits.kind == "auth"
    flagged = o.classify(403, {}, j({"error": {"code": 403, "message": "Your chosen model "
                                               "requires moderation and your input was flagged"}}))
    assert isinstance(flagged, JobRejected)


# -- job rejected ----------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("status", "content"),
    [
        (400, openai_error("'messages' : value must be an array", code=None)),
        (400, b"Bad Request"),
        (422, j({"detail": [{"loc": ["body", "messages"], "msg": "field required"}]})),
        (400, j({"object": "error", "message": "Invalid role: 'robot'",
                 "type": "invalid_request_error"})),
    ],
)
def test_job_rejected(dialect: str, status: int, content: bytes) -> None:
    out = adapter_for(dialect).classify(status, {}, content)
    assert isinstance(out, JobRejected), out
    assert out.status == status and out.message


# -- secrets and observations ----------------------------------------------------------


def test_error_text_is_redacted() -> None:
    key = "gsk_" + "A1b2C3d4" * 6
    out = adapter_for("groq").classify(401, {}, openai_error(f"Invalid API Key {key}"))
    assert isinstance(out, TargetRejected) and out.kind == "auth"
    assert key not in repr(out)


def test_observations_per_dialect() -> None:
    groq_headers = {"x-ratelimit-remaining-requests": "10", "x-ratelimit-remaining-tokens": "99"}
    assert len(adapter_for("groq").observations(200, groq_headers)) == 2
    assert adapter_for("nvidia").observations(200, groq_headers) == []
    assert adapter_for("cloudflare").observations(200, groq_headers) == []
    mistral = {"ratelimitbysize-remaining": "5", "ratelimitbysize-limit": "500000"}
    assert adapter_for("mistral").observations(200, mistral)[0].remaining == 5


# -- malformed numbers from an upstream (issue #11 item 3) ------------------------------


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": "5"}, {"prompt_tokens": [5]}, {"prompt_tokens": -1},
    {"completion_tokens": True}, {"total_tokens": 10**12}, {"prompt_tokens": 2.5},
    {"prompt_tokens": {"n": 5}}, [5, 2], "5", 7,
])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_usage_of_the_wrong_type_makes_the_answer_malformed(dialect: str, usage: Any) -> None:
    body = {**completion(), "usage": usage}
    out = adapter_for(dialect).classify(200, {}, j(body))
    assert isinstance(out, Transient) and out.status == 200
    assert "malformed answer" in out.message and "usage" in out.message


@pytest.mark.parametrize("raw", [
    b'"usage": {"prompt_tokens": 1e400, "completion_tokens": 2}',
    b'"usage": {"prompt_tokens": NaN}',
    b'"usage": {"prompt_tokens": Infinity}',
    b'"usage": {"prompt_tokens": ' + b"9" * 5000 + b"}",
    b'"usage": ' + b"[" * 5000 + b"]" * 5000,
])
def test_numbers_no_json_reader_can_take_make_the_answer_malformed(raw: bytes) -> None:
    content = b'{"choices": [{"message": {"role": "assistant", "content": "hi"}}], ' + raw + b"}"
    out = adapter_for("groq").classify(200, {}, content)
    assert isinstance(out, Transient) and out.message.startswith("malformed JSON in a 200")


def test_good_usage_is_kept_with_whole_numbers() -> None:
    body = {**completion(), "usage": {"prompt_tokens": 5.0, "completion_tokens": 2,
                                      "total_tokens": None, "cost": 0.1}}
    out = adapter_for("openrouter").classify(200, {}, j(body))
    assert isinstance(out, Success)
    assert out.usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": None,
                         "cost": 0.1}
    assert isinstance(out.usage["prompt_tokens"], int)
    assert isinstance(adapter_for("groq").classify(200, {}, j({**completion(), "usage": None})),
                      Success)


@pytest.mark.parametrize("retry_after", ["inf", "nan", "-5", "1e400", "Infinity", "lots",
                                         "Mon, 01 Jan 99999 00:00:00 GMT"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_429_with_a_garbage_retry_after_falls_back_to_the_default(
        dialect: str, retry_after: str) -> None:
    out = adapter_for(dialect).classify(429, {"Retry-After": retry_after},
                                        openai_error("slow down", "rate_limit"))
    assert isinstance(out, RateLimited) and out.retry_after_s is None


def test_a_huge_retry_after_or_hint_or_reset_is_capped() -> None:
    from workers.providers.headers import MAX_RETRY_AFTER_S

    groq = adapter_for("groq")
    for headers, message in (
        ({"Retry-After": "99999999"}, "slow down"),
        ({}, "Please try again in 999999h."),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "99999h"}, "no"),
    ):
        out = groq.classify(429, headers, openai_error(message, "rate_limit"))
        assert isinstance(out, RateLimited) and out.retry_after_s == MAX_RETRY_AFTER_S


def test_a_huge_error_code_is_just_a_code() -> None:
    body = {"error": {"message": "odd", "code": 10**18}}
    out = adapter_for("cloudflare").classify(200, {}, j(body))
    assert isinstance(out, Transient)
