"""How each provider speaks: error shapes, rate-limit headers, 429 bodies, quirks.

One :class:`Dialect` interface; each provider family overrides only what differs
(shapes from /work/shared/notes/providers.md, "Rate-limit headers and 429 bodies").
Selected by the provider's ``dialect`` config field via :func:`dialect_for`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from dispatcher.config.models import Per, Unit
from workers.simulator.accounting import LimitHit, LimitView


@dataclass
class Answer:
    """One HTTP answer. ``body`` is JSON-able, or bytes sent as-is; ``hold`` = never answer."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False


@dataclass(frozen=True)
class ErrorSpec:
    """A kind of error: HTTP status, OpenAI ``type``/``code``, Cloudflare's v4 code."""

    status: int
    type: str
    code: str | None
    cf_code: int


ERRORS: dict[str, ErrorSpec] = {
    "bad_request": ErrorSpec(400, "invalid_request_error", None, 5004),
    "unsupported_param": ErrorSpec(400, "invalid_request_error", "unsupported_parameter", 5004),
    "context": ErrorSpec(400, "invalid_request_error", "context_length_exceeded", 5021),
    "auth": ErrorSpec(401, "invalid_request_error", "invalid_api_key", 10000),
    "forbidden": ErrorSpec(403, "permission_denied", "permission_denied", 3023),
    "not_found": ErrorSpec(404, "invalid_request_error", "model_not_found", 5007),
    "too_large": ErrorSpec(413, "invalid_request_error", "request_too_large", 3006),
    "server": ErrorSpec(500, "server_error", "internal_error", 3043),
    "bad_gateway": ErrorSpec(502, "server_error", "bad_gateway", 3043),
    "unavailable": ErrorSpec(503, "server_error", "service_unavailable", 3040),
}

_PER_NAME = {Per.second: "second", Per.minute: "minute", Per.hour: "hour", Per.day: "day",
             Per.month: "month"}


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration`` text, as Groq and OpenAI send it: ``2m59.56s``, ``7.66s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    text = f"{s:.2f}".rstrip("0").rstrip(".") + "s"
    if m or h:
        text = f"{int(m)}m{text}"
    if h:
        text = f"{int(h)}h{text}"
    return text


def _n(value: float) -> str:
    """A count as a provider prints it: ``76``, ``0.38`` (never ``1e+09``)."""
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up (never 0: a client must wait at least a little)."""
    return str(max(1, math.ceil(seconds)))


def pick(views: list[LimitView], unit: Unit, per: Per) -> LimitView | None:
    """The tightest configured limit of that unit and period (least remaining)."""
    found = [v for v in views if v.unit is unit and v.per is per]
    return min(found, key=lambda v: v.remaining, default=None)


def openai_error(message: str, type_: str, code: Any, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class Dialect:
    """The OpenAI dialect; subclasses change only what their provider does differently."""

    name = "openai"
    reasoning_field: str | None = None
    sends_retry_after = True
    rejected_params: tuple[str, ...] = ()
    rejects_message_name = False
    single_choice_only = False
    requests_header_per: Per | None = Per.minute  # which request limit x-ratelimit-* shows
    tokens_header_per: Per | None = Per.minute
    too_large_status = 413  # one request above a limit can never pass: not a 429
    calendar_means_billing = True  # OpenAI: a spent day/month quota is "insufficient_quota"
    daily_unit = Unit.requests  # what an injected "429_daily" says was spent

    # -- errors ---------------------------------------------------------------------
    def error_body(self, spec: ErrorSpec, message: str, param: str | None) -> Any:
        return openai_error(message, spec.type, spec.code, param)

    def error(self, kind: str, message: str, param: str | None = None,
              status: int | None = None) -> Answer:
        spec = ERRORS[kind]
        return Answer(status or spec.status, self.error_body(spec, message, param))

    def error_in_200(self, model: str) -> Answer:
        """An upstream failure reported inside an HTTP 200 body (OpenRouter does this)."""
        body = {"error": {"code": 502, "message": "Provider returned error",
                          "metadata": {"raw": "simulated upstream failure",
                                       "provider_name": "Simulator"}},
                "user_id": "user_simulated"}
        return Answer(200, body)

    # -- rate limits ----------------------------------------------------------------
    def limit_name(self, hit: LimitHit) -> str:
        short = {Unit.requests: "R", Unit.tokens: "T", Unit.neurons: "N"}[hit.unit]
        abbr = f"{short}P{_PER_NAME[hit.per][0].upper()}"
        return f"{hit.unit.value} per {_PER_NAME[hit.per]} ({abbr})"

    def rate_limit_message(self, hit: LimitHit, model: str) -> str:
        if hit.retry_after is None:
            return (
                f"Request too large for model `{model}` in organization `org_simulated` "
                f"service tier `on_demand` on {self.limit_name(hit)}: Limit {hit.limit}, "
                f"Requested {_n(hit.requested)}, please reduce your message size and try again."
            )
        wait = go_duration(hit.retry_after)
        return (
            f"Rate limit reached for model `{model}` in organization `org_simulated` "
            f"service tier `on_demand` on {self.limit_name(hit)}: Limit {hit.limit}, "
            f"Used {_n(hit.used)}, Requested {_n(hit.requested)}. Please try again in {wait}."
        )

    def rate_limit_body(self, hit: LimitHit, model: str) -> Any:
        type_ = "tokens" if hit.unit is not Unit.requests else "requests"
        code = "rate_limit_exceeded"
        if hit.calendar and self.calendar_means_billing:
            return openai_error(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota", "insufficient_quota")
        return openai_error(self.rate_limit_message(hit, model), type_, code)

    def rate_limit_headers(self, hit: LimitHit) -> dict[str, str]:
        if self.sends_retry_after and hit.retry_after is not None:
            return {"retry-after": retry_after_header(hit.retry_after)}
        return {}

    def rate_limited(self, hit: LimitHit, model: str, views: list[LimitView],
                     retry_after: float | None = None) -> Answer:
        """The 429 for ``hit`` (``retry_after`` given: an injected slow-down says so)."""
        headers = {**self.success_headers(views), **self.rate_limit_headers(hit)}
        if retry_after is not None:
            headers["retry-after"] = retry_after_header(retry_after)
        status = self.too_large_status if hit.retry_after is None else 429
        return Answer(status, self.rate_limit_body(hit, model), headers)

    def success_headers(self, views: list[LimitView]) -> dict[str, str]:
        """``x-ratelimit-*`` as OpenAI sends them (Groq: requests per day)."""
        headers: dict[str, str] = {}
        for unit, per in ((Unit.requests, self.requests_header_per),
                          (Unit.tokens, self.tokens_header_per)):
            view = pick(views, unit, per) if per else None
            if view is None:
                continue
            headers[f"x-ratelimit-limit-{unit.value}"] = str(view.limit)
            headers[f"x-ratelimit-remaining-{unit.value}"] = str(int(view.remaining))
            headers[f"x-ratelimit-reset-{unit.value}"] = go_duration(view.reset_in)
        return headers

    def slow_down(self, hit: LimitHit, model: str, views: list[LimitView]) -> Answer:
        """An injected transient 429 ("try again in a moment")."""
        return self.rate_limited(hit, model, views)

    # -- completions ----------------------------------------------------------------
    def decorate(self, body: dict[str, Any], request_id: str) -> None:
        """Provider extras on a successful completion body."""


class GroqDialect(Dialect):
    name = "groq"
    reasoning_field = "reasoning"
    rejected_params = ("logprobs", "logit_bias", "top_logprobs")
    rejects_message_name = True
    single_choice_only = True
    requests_header_per = Per.day
    calendar_means_billing = False

    def decorate(self, body: dict[str, Any], request_id: str) -> None:
        body["x_groq"] = {"id": request_id}


class OpenRouterDialect(Dialect):
    name = "openrouter"
    too_large_status = 429
    reasoning_field = "reasoning"

    def error_body(self, spec: ErrorSpec, message: str, param: str | None) -> Any:
        return {"error": {"code": spec.status, "message": message, "metadata": {}}}

    def success_headers(self, views: list[LimitView]) -> dict[str, str]:
        return {}

    def _limit_headers(self, hit: LimitHit) -> dict[str, str]:
        reset_ms = int((time.time() + (hit.retry_after or hit.reset_in)) * 1000)
        return {"X-RateLimit-Limit": str(hit.limit), "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(reset_ms)}

    def rate_limit_headers(self, hit: LimitHit) -> dict[str, str]:
        headers = self._limit_headers(hit)
        if hit.retry_after is not None:
            headers["Retry-After"] = retry_after_header(hit.retry_after)
        return headers

    def rate_limit_body(self, hit: LimitHit, model: str) -> Any:
        if hit.per is Per.day:
            what = ("free-models-per-day. Add 10 credits to unlock 1000 free model requests "
                    "per day")
        elif hit.per is Per.minute and hit.unit is Unit.requests:
            what = "free-models-per-min."
        else:
            what = f"{hit.unit.value}-per-{_PER_NAME[hit.per]}."
        return {"error": {"code": 429, "message": f"Rate limit exceeded: {what}",
                          "metadata": {"headers": self._limit_headers(hit),
                                       "provider_name": None}}}

    def decorate(self, body: dict[str, Any], request_id: str) -> None:
        body["provider"] = "Simulator"
        body["usage"]["cost"] = 0


class CloudflareDialect(Dialect):
    """Cloudflare's v4 envelope; no rate-limit headers documented, so none sent."""

    name = "cloudflare"
    too_large_status = 429
    daily_unit = Unit.neurons
    reasoning_field = "reasoning_content"
    sends_retry_after = False

    @staticmethod
    def envelope(code: int, message: str) -> dict[str, Any]:
        return {"success": False, "errors": [{"code": code, "message": message}],
                "messages": [], "result": None}

    def error_body(self, spec: ErrorSpec, message: str, param: str | None) -> Any:
        return self.envelope(spec.cf_code, message)

    def error(self, kind: str, message: str, param: str | None = None,
              status: int | None = None) -> Answer:
        if kind == "unavailable" and status is None:  # out of capacity: a 429 on Cloudflare
            return Answer(429, self.envelope(3040, "No more data centers to forward the "
                                             "request to"))
        return super().error(kind, message, param, status)

    def success_headers(self, views: list[LimitView]) -> dict[str, str]:
        return {}

    def slow_down(self, hit: LimitHit, model: str, views: list[LimitView]) -> Answer:
        return self.error("unavailable", "out of capacity")

    def rate_limit_body(self, hit: LimitHit, model: str) -> Any:
        if hit.calendar:
            return self.envelope(
                3036, f"You have used up your daily free allocation of {hit.limit:,} "
                f"{hit.unit.value}. Please upgrade to Cloudflare's Workers Paid plan if you "
                "would like to continue usage.")
        return self.envelope(971, "Please wait and consider throttling your request speed")


class MistralDialect(Dialect):
    name = "mistral"
    too_large_status = 429
    sends_retry_after = False

    def error_body(self, spec: ErrorSpec, message: str, param: str | None) -> Any:
        return {"object": "error", "message": message, "type": spec.type, "param": param,
                "code": spec.code}

    def success_headers(self, views: list[LimitView]) -> dict[str, str]:
        """``ratelimitbysize-*``: the token ("size") limits, per minute and per month."""
        headers: dict[str, str] = {}
        minute, month = pick(views, Unit.tokens, Per.minute), pick(views, Unit.tokens, Per.month)
        if minute is not None:
            headers["ratelimitbysize-limit"] = str(minute.limit)
            headers["ratelimitbysize-remaining"] = str(int(minute.remaining))
            headers["ratelimitbysize-reset"] = str(math.ceil(minute.reset_in))
        for label, view in (("minute", minute), ("month", month)):
            if view is not None:
                headers[f"x-ratelimitbysize-limit-{label}"] = str(view.limit)
                headers[f"x-ratelimitbysize-remaining-{label}"] = str(int(view.remaining))
        return headers

    def rate_limit_body(self, hit: LimitHit, model: str) -> Any:
        what = "Requests" if hit.unit is Unit.requests else "Tokens"
        return {"object": "error", "message": f"{what} rate limit exceeded",
                "type": "rate_limited", "param": None, "code": "1300"}


class NvidiaDialect(Dialect):
    """NVIDIA NIM: RFC 7807 problem bodies, no rate-limit headers."""

    name = "nvidia"
    too_large_status = 429
    reasoning_field = "reasoning_content"
    sends_retry_after = False

    def error_body(self, spec: ErrorSpec, message: str, param: str | None) -> Any:
        return {"type": "about:blank", "status": spec.status,
                "title": HTTPStatus(spec.status).phrase, "detail": message}

    def success_headers(self, views: list[LimitView]) -> dict[str, str]:
        return {}

    def rate_limit_body(self, hit: LimitHit, model: str) -> Any:
        return {"status": 429, "title": "Too Many Requests"}


DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (Dialect(), GroqDialect(), OpenRouterDialect(), CloudflareDialect(),
              MistralDialect(), NvidiaDialect())
}


def dialect_for(name: str) -> Dialect:
    return DIALECTS.get(name, DIALECTS["openai"])
