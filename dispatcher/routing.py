"""The pure routing rules: which targets could ever take a job, and which one takes it now.

No I/O here (the environment is read only through ``Config.usable``). Keeping the rules
pure lets the batch validator, the router and the tests share exactly one definition.

    >>> choose_target([5.0, 0.0], preference_delay_s=2.0)   # preferred too far off
    1
    >>> choose_target([1.5, 0.0], preference_delay_s=2.0)   # preferred soon enough
    0
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dispatcher.config import Config, Target
from workers.quota.costs import (
    count_images,
    estimate_cost,
    estimate_prompt_tokens,
    max_tokens_sent,
)
from workers.quota.limits import charge_scale

_VAR_NO_DEFAULT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Eligibility:
    """The targets that could ever take a job, or the code and reason why none can.

    ``code`` is one of ``no_vision_target``, ``too_large``, ``max_tokens_too_large``,
    ``no_target`` (also the :mod:`dispatcher.batchfile` problem codes); ``None`` when
    ``targets`` is non-empty. ``missing_env`` names the variables whose absence disabled
    the only targets that would otherwise fit, so the CLI can say what to set.
    """

    targets: list[Target]
    code: str | None = None
    reason: str | None = None
    missing_env: tuple[str, ...] = field(default=())


class Memo:
    """Per-batch cache of routes and enablement, so validating a million lines stays fast.

    Valid while the configuration and environment do not change (one parse, say).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._candidates: dict[tuple[str | None, str | None], list[Target]] = {}
        self._usable: dict[str, bool] = {}

    def candidates(self, tag: str | None, pinned: str | None) -> list[Target]:
        key = (tag, pinned)
        if key not in self._candidates:
            cfg = self.cfg
            self._candidates[key] = [cfg.target(pinned)] if pinned else cfg.route(tag or "")
        return self._candidates[key]

    def usable(self, t: Target) -> bool:
        if t.key not in self._usable:
            self._usable[t.key] = self.cfg.usable(t)
        return self._usable[t.key]


def _describe(tag: str | None, pinned: str | None) -> str:
    return f"pinned target {pinned!r}" if pinned else f"tag {tag!r}"


def _limit_blocker(body: dict[str, Any], t: Target, cfg: Config) -> str | None:
    """The first limit this job's cost could never fit on ``t`` (as text), else None."""
    cost = estimate_cost(body, t.model, cfg.settings.quota, cfg.settings.jobs)
    for _scope, lim in t.limits():
        need = cost.of(lim.unit)
        cap = lim.limit * charge_scale(lim.unit)
        if need > cap:
            return f"{t.key}: {lim.limit} {lim.unit.value}/{lim.per.value}"
    return None


def eligibility(
    body: dict[str, Any],
    tag: str | None,
    pinned: str | None,
    cfg: Config,
    memo: Memo | None = None,
) -> Eligibility:
    """Filter the job's candidates (the pinned target, else the tag's route) in order.

    Static reasons (vision, context window, limits) are judged on every candidate before
    enablement, so that the reported reason is the one a user can act on: a prompt too
    large for every target is ``too_large`` even if some providers are also disabled.

    Raises ``KeyError``/``ValueError`` for an unknown tag or target (the caller's check).
    """
    memo = memo or Memo(cfg)
    candidates = memo.candidates(tag, pinned)
    what = _describe(tag, pinned)
    if not candidates:
        return Eligibility([], "no_target", f"{what} has no targets in routes.yaml")

    messages = body.get("messages") or []
    if count_images(messages):
        candidates = [t for t in candidates if t.model.vision]
        if not candidates:
            why = "is not vision-capable" if pinned else "has no vision-capable target"
            return Eligibility([], "no_vision_target", f"job has image parts but {what} {why}")

    prompt = estimate_prompt_tokens(messages, cfg.settings.quota)
    fitting = [t for t in candidates if prompt + 1 <= t.model.context_window]
    if not fitting:
        largest = max(t.model.context_window for t in candidates)
        return Eligibility(
            [],
            "too_large",
            f"prompt (~{prompt} tokens) larger than every context window of {what} "
            f"(largest {largest})",
        )

    admitted: list[Target] = []
    blockers: list[str] = []
    for t in fitting:
        blocker = _limit_blocker(body, t, cfg)
        if blocker:
            blockers.append(blocker)
        else:
            admitted.append(t)
    if not admitted:
        out = max_tokens_sent(body, fitting[0].model, cfg.settings.jobs)
        return Eligibility(
            [],
            "max_tokens_too_large",
            f"max_tokens {out} with a prompt of ~{prompt} tokens cannot fit the limits of "
            f"any target of {what} (e.g. {blockers[0]})",
        )

    usable = [t for t in admitted if memo.usable(t)]
    if usable:
        return Eligibility(usable)
    reasons: list[str] = []
    missing: list[str] = []
    for t in admitted:
        status = cfg.status(t.provider)
        if not status.enabled:
            text = f"provider {t.provider} is disabled: {status.reason}"
            missing.extend(v for v in _missing_vars(cfg, t.provider) if v not in missing)
        else:
            text = f"{t.key} is a paid model (set allow_paid: true in settings.yaml)"
        if text not in reasons:
            reasons.append(text)
    lead = f"{what} cannot be used" if pinned else f"no enabled target for {what}"
    return Eligibility([], "no_target", f"{lead}: " + "; ".join(reasons), tuple(missing))


def _missing_vars(cfg: Config, provider: str) -> list[str]:
    """The unset environment variables (key, then ``${VAR}`` in base_url) of ``provider``."""
    pc = cfg.providers[provider]
    names = [pc.api_key_env]
    names += _VAR_NO_DEFAULT.findall(pc.base_url)
    return [n for n in names if not os.environ.get(n)]


def eligible_targets(
    body: dict[str, Any], tag: str | None, pinned: str | None, cfg: Config
) -> tuple[list[Target], str | None]:
    """The targets (preference order) that could ever take this job; if none, the reason."""
    result = eligibility(body, tag, pinned, cfg)
    return result.targets, result.reason


def choose_target(delays: Sequence[float | None], preference_delay_s: float) -> int | None:
    """THE routing rule: which of the eligible targets takes the job.

    ``delays[i]`` is how long until target ``i`` (preference order) could start the job,
    ``None`` when it cannot. The first target free within ``preference_delay_s`` wins
    (a short wait for the preferred model beats a worse model now); otherwise the one
    free soonest, ties going to the more preferred; ``None`` when no target can.
    """
    best: int | None = None
    best_delay = float("inf")
    for i, d in enumerate(delays):
        if d is None:
            continue
        if d <= preference_delay_s:
            return i
        if best is None or d < best_delay:
            best, best_delay = i, d
    return best
