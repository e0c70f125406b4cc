"""The configuration schema (CONTRACT.md, "Configuration: a directory").

Every model forbids unknown keys: a typo must not silently drop a limit.
Provider figures live in ``config/*.yaml``, never here.
"""

from __future__ import annotations

import re
from datetime import timedelta, timezone, tzinfo
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BUILTIN_TAGS = ("fast", "reasoning", "bulk", "vision")


_OFFSET_RE = re.compile(r"^(?:UTC)?([+-])(\d{2}):(\d{2})$")


@lru_cache(maxsize=128)
def zone(name: str) -> tzinfo:
    """The tzinfo of an IANA name (``"Europe/Paris"``) or a fixed UTC offset (``"+05:47"``,
    ``"UTC-03:00"``): a fixed offset lets a test or a benchmark put midnight anywhere."""
    m = _OFFSET_RE.match(name)
    if m:
        sign, hours, minutes = m.groups()
        if int(hours) > 23 or int(minutes) > 59:
            raise ValueError(f"UTC offset {name!r} out of range")
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        return timezone(-delta if sign == "-" else delta, name)
    return ZoneInfo(name)


def _known_zone(v: str) -> str:
    try:
        zone(v)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a weird path
        raise ValueError(f"unknown time zone {v!r} (an IANA name or an offset like "
                         "\"+05:30\")") from exc
    return v


TimeZone = Annotated[str, AfterValidator(_known_zone)]
"""An IANA time zone name or a fixed UTC offset such as ``"+05:30"`` (calendar limits and
cron entries are read in it)."""


class Strict(BaseModel):
    """Unknown keys refused; ``.inf``/``.nan`` refused (no setting means "forever")."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


BIG = 10**12
"""Upper bound of a count (a limit, tokens): past it a value is a typo, and the quota
scripts' arithmetic (Lua numbers are doubles) would lose precision."""
TOKENS = 10**8
"""Upper bound of a token count of one request (context windows are a few million)."""


class Unit(StrEnum):
    requests = "requests"
    tokens = "tokens"
    neurons = "neurons"


class Per(StrEnum):
    second = "second"
    minute = "minute"
    hour = "hour"
    day = "day"
    month = "month"

    @property
    def rolling(self) -> bool:
        return self in (Per.second, Per.minute, Per.hour)

    @property
    def seconds(self) -> int:
        """Window length of a rolling limit (calendar periods have no fixed length)."""
        return {Per.second: 1, Per.minute: 60, Per.hour: 3600}[self]


class Reserve(Strict):
    """``reserve: {share: 0.2, for: interactive}`` on a calendar limit: the share of it that
    batch jobs may not take (interactive requests may use all of it)."""

    share: Annotated[float, Field(gt=0, lt=1)]
    for_: Annotated[Literal["interactive"], Field(alias="for")] = "interactive"


class Limit(Strict):
    """``{unit: requests, limit: 30, per: minute}``, optionally with a ``reserve``."""

    unit: Unit
    limit: Annotated[int, Field(gt=0, le=BIG)]
    per: Per
    reserve: Reserve | None = None

    @model_validator(mode="after")
    def _reserve_on_calendar(self) -> Limit:
        if self.reserve is not None and self.per.rolling:
            raise ValueError(f"reserve: only a day or month limit can keep a reserve "
                             f"(this one is per {self.per.value})")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # No reserve: the same document (and limits fingerprint) as before reserves existed.
        out = handler(self)
        if out.get("reserve") is None:
            out.pop("reserve", None)
        return out


class NeuronRates(Strict):
    """Cloudflare neurons per million tokens."""

    input_per_million: Annotated[float, Field(ge=0, le=BIG)]
    output_per_million: Annotated[float, Field(ge=0, le=BIG)]


class Price(Strict):
    """List price (USD per million tokens) of the paid equivalent, for `dispatch report`."""

    input_per_million: Annotated[float, Field(ge=0, le=BIG)]
    output_per_million: Annotated[float, Field(ge=0, le=BIG)]


class ModelConfig(Strict):
    id: Annotated[str, Field(min_length=1)]
    context_window: Annotated[int, Field(gt=0, le=TOKENS)] = 131072
    max_output_tokens: Annotated[int, Field(gt=0, le=TOKENS)] = 8192
    default_max_tokens: Annotated[int | None, Field(gt=0, le=TOKENS)] = None
    vision: bool = False
    reasoning: bool = False
    paid: bool = False
    limits: list[Limit] = []
    neurons: NeuronRates | None = None
    price: Price | None = None

    @field_validator("id")
    @classmethod
    def _no_space(cls, v: str) -> str:
        if v != v.strip() or " " in v:
            raise ValueError("model id must not contain spaces")
        return v


Dialect = Literal["openai", "groq", "openrouter", "cloudflare", "mistral", "nvidia"]


class ProviderConfig(Strict):
    base_url: Annotated[str, Field(min_length=1)]
    api_key_env: str
    timezone: TimeZone = "UTC"
    limits: list[Limit] = []
    models: Annotated[list[ModelConfig], Field(min_length=1)]
    # Operational settings (the implementation's choice, see README).
    dialect: Dialect = "openai"
    concurrency: Annotated[int, Field(gt=0, le=256)] = 8
    timeout_s: Annotated[float, Field(gt=0, le=86400)] = 120.0
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    paid: bool = False
    count_429_tokens: bool = True
    """A 429 counts as a request; whether its tokens count too (the safe default: yes)."""

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not ENV_NAME_RE.match(v):
            raise ValueError(
                "must be the NAME of an environment variable (letters, digits, '_'), "
                "never the key itself"
            )
        return v

    @model_validator(mode="after")
    def _check_models(self) -> ProviderConfig:
        seen: set[str] = set()
        for i, m in enumerate(self.models):
            if m.id in seen:
                raise ValueError(f"models[{i}].id: duplicate model id {m.id!r}")
            seen.add(m.id)
            all_limits = list(self.limits) + list(m.limits)
            if any(lim.unit is Unit.neurons for lim in all_limits) and m.neurons is None:
                raise ValueError(
                    f"models[{i}] ({m.id}): a neurons limit applies but the model has no "
                    "`neurons` rates"
                )
            if self.dialect == "openrouter" and not m.id.endswith(":free") and not m.paid:
                raise ValueError(
                    f"models[{i}] ({m.id}): an OpenRouter model without ':free' can bill; "
                    "mark it `paid: true`"
                )
            if m.default_max_tokens and m.default_max_tokens > m.max_output_tokens:
                raise ValueError(
                    f"models[{i}] ({m.id}): default_max_tokens exceeds max_output_tokens"
                )
        return self

    def model(self, model_id: str) -> ModelConfig | None:
        return next((m for m in self.models if m.id == model_id), None)


class ProvidersFile(Strict):
    providers: dict[str, ProviderConfig]

    @field_validator("providers")
    @classmethod
    def _names(cls, v: dict[str, ProviderConfig]) -> dict[str, ProviderConfig]:
        for name in v:
            if not NAME_RE.match(name):
                raise ValueError(
                    f"provider name {name!r}: use lowercase letters, digits, '-' and '_'"
                )
        return v


class RoutesFile(Strict):
    routes: dict[str, list[str]] = {}

    @field_validator("routes")
    @classmethod
    def _tags(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for tag in v:
            if not NAME_RE.match(tag):
                raise ValueError(f"tag {tag!r}: use lowercase letters, digits, '-' and '_'")
        out = {t: [] for t in BUILTIN_TAGS}
        out.update({t: list(targets or []) for t, targets in v.items()})
        return out


Priority = Literal["high", "normal", "low"]
"""A batch's priority (weights in ``settings.yaml`` ``priorities``)."""


class Schedule(Strict):
    """A cron entry: a 5-field expression and a batch file or inline jobs to enqueue."""

    cron: str
    timezone: TimeZone = "UTC"
    batch: str | None = None
    jobs: list[dict] | None = None
    enabled: bool = True
    priority: Priority = "normal"

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        fields = v.split()
        if len(fields) != 5:
            raise ValueError(f"cron {v!r}: expected 5 fields (minute hour day month weekday)")
        from celery.schedules import crontab

        try:
            crontab(*fields[:2], day_of_month=fields[2], month_of_year=fields[3],
                    day_of_week=fields[4])
        except Exception as exc:  # celery raises ValueError / ParseException
            raise ValueError(f"cron {v!r}: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _one_source(self) -> Schedule:
        if (self.batch is None) == (self.jobs is None):
            raise ValueError("give exactly one of `batch` (a JSONL file) or `jobs` (inline)")
        return self


class SchedulesFile(Strict):
    schedules: dict[str, Schedule] = {}


class RoutingSettings(Strict):
    preference_delay_s: Annotated[float, Field(ge=0, le=86400)] = 2.0
    """A preferred target that frees up within this delay wins over a less preferred one."""
    horizon_s: Annotated[float, Field(gt=0, le=86400)] = 2.0
    """Jobs are handed to a provider queue only when they can start within this horizon."""
    chain_max_jobs: Annotated[int, Field(ge=1, le=BIG)] = 100
    """A call task that completed its job goes on with its target's backlog (jobs for which
    the target is the first choice) for at most this many jobs; 1 turns it off."""
    chain_max_s: Annotated[float, Field(gt=0, le=86400)] = 30.0
    """... and starts no further job after this many seconds (well under the visibility
    timeout, and short enough for a prompt warm shutdown)."""


class EstimatorSettings(Strict):
    """The prompt estimate by kind of text, and how it learns (workers/quota/estimate.py)."""

    code_tokens_per_char: Annotated[float, Field(gt=0)] = 0.5
    cjk_tokens_per_char: Annotated[float, Field(gt=0)] = 2.0
    emoji_tokens_per_char: Annotated[float, Field(gt=0)] = 3.0
    other_tokens_per_char: Annotated[float, Field(gt=0)] = 1.0
    schema_tokens_per_char: Annotated[float, Field(gt=0)] = 0.5
    learn: bool = True
    margin: Annotated[float, Field(ge=0, le=2)] = 0.1
    samples: Annotated[int, Field(ge=1, le=1000)] = 32
    min_samples: Annotated[int, Field(ge=1)] = 3
    dominant_share: Annotated[float, Field(gt=0.5, le=1)] = 0.6


class QuotaSettings(Strict):
    timing_margin_ms: Annotated[float, Field(ge=0, le=3_600_000)] = 20.0
    timing_margin_pct: Annotated[float, Field(ge=0, le=1)] = 0.2
    """Added to ``timing_margin_ms``, in per cent of the window (0.2 %: 120 ms a minute)."""
    """Added to every rolling window, capped at 1% of it, for send-time jitter."""
    chars_per_token: Annotated[float, Field(gt=0, le=1000)] = 3.0
    message_overhead_tokens: Annotated[int, Field(ge=0, le=TOKENS)] = 8
    image_tokens: Annotated[int, Field(ge=0, le=TOKENS)] = 1600
    estimator: EstimatorSettings = EstimatorSettings()


class JobSettings(Strict):
    default_max_tokens: Annotated[int, Field(gt=0, le=TOKENS)] = 1024
    max_lines: Annotated[int, Field(gt=0, le=BIG)] = 1_000_000
    max_line_bytes: Annotated[int, Field(gt=0, le=2**30)] = 8 * 2**20
    """Longest request line (bytes, without its newline): a longer one is refused with
    its line number and skipped without being read into memory."""
    retention_days: Annotated[float, Field(gt=0, le=36500)] = 7.0
    max_attempts: Annotated[int, Field(gt=0, le=10_000)] = 8


class CatalogSettings(Strict):
    check_every_s: Annotated[float, Field(ge=0)] = 3600.0
    """Workers compare the catalog with the providers' model lists this often (0: off)."""
    inline_image_max_bytes: Annotated[int, Field(gt=0)] = 4_000_000
    """Largest http(s) image inlined as a data URI for a data-URI-only model."""


class ReliabilitySettings(Strict):
    """Worker liveness and crash handling (workers/liveness.py, the job store's sweep)."""

    lease_s: Annotated[float, Field(gt=0)] = 12.0
    """A worker process whose heartbeat lease is this old is dead: its jobs wait again."""
    lease_renew_s: Annotated[float, Field(gt=0)] = 3.0
    """How often a live worker renews its lease (well under ``lease_s``)."""
    handout_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """A job handed to a provider queue that no call task started within this long is
    handed out again (its message was lost); the old message then does nothing."""
    max_crashes: Annotated[int, Field(ge=1)] = 3
    """A job whose call task crashed (or whose worker died under it) this many times ends
    ``failed`` with ``internal_error`` instead of being sent again forever."""

    @model_validator(mode="after")
    def _renew_within_lease(self) -> ReliabilitySettings:
        if self.lease_renew_s * 2 > self.lease_s:
            raise ValueError(f"lease_renew_s ({self.lease_renew_s}) must be at most half of "
                             f"lease_s ({self.lease_s}): one late renewal must not kill a "
                             "live worker")
        return self


class ForecastSettings(Strict):
    latency_s: Annotated[float, Field(gt=0)] = 2.0
    """Typical duration of one upstream call, for ``dispatch plan``'s forecast (a target
    serves at most ``concurrency / latency_s`` jobs a second)."""


class PrioritySettings(Strict):
    """Shares of the batch priorities: while batches of several priorities wait for the
    same targets, each gets jobs in proportion to its weight (defaults: a high batch gets
    ten jobs for each of a normal one, a hundred for each of a low one), so a lower
    priority is served last but never starves."""

    high: Annotated[float, Field(gt=0)] = 100.0
    normal: Annotated[float, Field(gt=0)] = 10.0
    low: Annotated[float, Field(gt=0)] = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> PrioritySettings:
        if not self.high >= self.normal >= self.low:
            raise ValueError("weights must satisfy high >= normal >= low")
        return self


class GatewaySettings(Strict):
    """``dispatch serve``: how long an interactive request may wait, how large a body."""

    max_wait_s: Annotated[float, Field(ge=0)] = 30.0
    """Longest wait for capacity (``X-Dispatch-Max-Wait`` may only lower it); then 429."""
    max_request_mb: Annotated[float, Field(gt=0)] = 16.0
    """Largest JSON request body (chat completions, batch creation)."""
    max_file_mb: Annotated[float, Field(gt=0)] = 100.0
    """Largest uploaded batch input file."""


class Settings(Strict):
    """``settings.yaml`` (optional): operational settings, documented in the README."""

    allow_paid: bool = False
    routing: RoutingSettings = RoutingSettings()
    quota: QuotaSettings = QuotaSettings()
    jobs: JobSettings = JobSettings()
    catalog: CatalogSettings = CatalogSettings()
    reliability: ReliabilitySettings = ReliabilitySettings()
    gateway: GatewaySettings = GatewaySettings()
    prices: dict[str, Price] = {}
    """Paid-equivalent list prices by target (``provider/model``) for ``dispatch report``."""
    forecast: ForecastSettings = ForecastSettings()
    priorities: PrioritySettings = PrioritySettings()
