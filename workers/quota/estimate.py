"""A tight, true upper bound on the prompt that learns from the upstream's ``usage``.

Before any answer, each kind of text (:mod:`workers.quota.textkinds`) is counted at its
conservative default rate. Each answer's reported ``prompt_tokens`` then tells how far
off that was: the factor by which the kind that dominated the prompt must scale (or, when
the estimate fell short, every kind present). The newest ``samples`` of each kind are kept
per model in Redis, shared by every process, and an estimate scales each kind by the
largest of them times ``1 + margin`` — so a prompt denser than any seen so far is still
covered by the margin, and a new kind of text keeps its default until it has been seen.
Samples are per model and per mode (simulated traffic learns apart from real traffic).

The rule is pure (:func:`factors_from`, :func:`samples_for`); :class:`Learner` is its
Redis side. Why the rule is safe: after an observation of a prompt, the estimate of that
same prompt is never below what the upstream reported (the property tests check it).

Key: ``{ns}:q:{live|sim}:{<provider>}:est:<model>`` HASH, field per kind, value
``"s1,s2,..."`` (newest first).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from dispatcher.config.loader import Target
from dispatcher.config.models import EstimatorSettings, QuotaSettings
from workers.quota.costs import Cost, estimate_cost
from workers.quota.textkinds import KINDS, Features, prompt_features

MIN_LEARN_TOKENS = 16.0
"""Prompts whose text (at current factors) is smaller than this never lower a factor:
the fixed per-message part dominates and the ratio is noise (a short estimate still
raises it)."""
FLOOR = 0.05
"""No kind is ever estimated below 5 % of its default rate (a broken ``usage``)."""
REFRESH_S = 2.0
"""How long a process uses its copy of a model's factors before reading them again."""
WRITE_EVERY_S = 1.0
"""Unremarkable samples are written at most this often per model and process."""
TTL_S = 30 * 86400


def factors_from(samples: Mapping[str, list[float]], est: EstimatorSettings) -> dict[str, float]:
    """Each kind's factor: the largest recent sample times ``1 + margin``; with fewer
    than ``min_samples`` samples never below 1 (the default), never below ``FLOOR``."""
    out = {}
    for kind in KINDS:
        xs = samples.get(kind) or []
        top = max(xs) * (1 + est.margin) if xs else 0.0
        out[kind] = max(FLOOR, top if len(xs) >= est.min_samples else max(1.0, top))
    return out


def samples_for(features: Features, q: QuotaSettings, factors: Mapping[str, float],
                actual: int) -> dict[str, float]:
    """What one answer teaches: ``{kind: factor that would have matched}``.

    ``s`` = (reported prompt - fixed part) / (text part at the current factors). When the
    estimate fell short (``s > 1``), every kind present is raised by ``s``; otherwise only
    a kind that made at least ``dominant_share`` of the text learns (a mixed prompt says
    little about any one kind)."""
    weights = {k: t * factors.get(k, 1.0) for k, t in features.default_tokens(q).items()
               if t > 0}
    total = sum(weights.values())
    if total <= 0:
        return {}
    s = max(0.0, actual - features.fixed) / total
    if s > 1:  # short: always raise, however small the prompt
        return {k: factors.get(k, 1.0) * s for k in weights}
    if total < MIN_LEARN_TOKENS:
        return {}
    share = q.estimator.dominant_share
    return {k: factors.get(k, 1.0) * s for k, w in weights.items() if w >= share * total}


def parse_state(raw: Mapping[Any, Any]) -> dict[str, list[float]]:
    """The Redis hash (or the script's flat reply made a dict) as samples per kind."""
    out: dict[str, list[float]] = {}
    for k, v in raw.items():
        kind = k.decode() if isinstance(k, bytes) else str(k)
        text = v.decode() if isinstance(v, bytes) else str(v)
        try:
            out[kind] = [float(x) for x in text.split(",") if x]
        except ValueError:
            continue
    return out


class Learner:
    """The estimator of one :class:`~workers.quota.engine.QuotaEngine` (live or simulated).

        cost, features = engine.learner.estimate(target, body)   # before the reservation
        engine.learner.observe(target, features, usage["prompt_tokens"])   # after success
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        cfg = engine.config.settings
        self.q: QuotaSettings = cfg.quota
        self.jobs = cfg.jobs
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, dict[str, list[float]], dict[str, float]]] = {}
        self._written: dict[str, float] = {}

    def key(self, target: Target) -> str:
        return self.engine.key_prefix(target.provider) + "est:" + target.model.id

    def factors(self, target: Target) -> dict[str, float]:
        """This model's learned factors (all 1.0 when learning is off or nothing is known)."""
        return self._state(target)[1]

    def _state(self, target: Target) -> tuple[dict[str, list[float]], dict[str, float]]:
        if not self.q.estimator.learn:
            return {}, dict.fromkeys(KINDS, 1.0)
        with self._lock:
            hit = self._cache.get(target.key)
        if hit is not None and time.monotonic() - hit[0] < REFRESH_S:
            return hit[1], hit[2]
        raw = self.engine._call(self.engine.redis.hgetall, self.key(target))
        return self._remember(target, parse_state(raw))

    def _remember(self, target: Target, samples: dict[str, list[float]]
                  ) -> tuple[dict[str, list[float]], dict[str, float]]:
        factors = factors_from(samples, self.q.estimator)
        with self._lock:
            self._cache[target.key] = (time.monotonic(), samples, factors)
        return samples, factors

    def estimate(self, target: Target, body: dict[str, Any]) -> tuple[Cost, Features]:
        """The reservation for ``body`` on ``target`` with what is learned so far."""
        features = prompt_features(body, self.q)
        cost = estimate_cost(body, target.model, self.q, self.jobs,
                             factors=self.factors(target), features=features)
        return cost, features

    def observe(self, target: Target, features: Features, prompt_tokens: int) -> None:
        """Learn from one answer's reported prompt size. Writes to Redis only what tells
        something new (a kind still learning, a short estimate, a new largest sample), and
        otherwise at most once per ``WRITE_EVERY_S``."""
        if not self.q.estimator.learn:
            return
        samples, factors = self._state(target)
        new = samples_for(features, self.q, factors, prompt_tokens)
        if not new:
            return
        est = self.q.estimator
        now = time.monotonic()
        telling = any(len(samples.get(k) or []) < est.samples or v > 1.0
                      or v > max(samples.get(k) or [0.0]) for k, v in new.items())
        if not telling and now - self._written.get(target.key, 0.0) < WRITE_EVERY_S:
            return
        self._written[target.key] = now
        args: list[Any] = [est.samples, TTL_S]
        for k, v in new.items():
            args += [k, f"{v:.5f}"]
        reply = self.engine._eval("learn", [self.key(target)], args)
        flat = [reply[i:i + 2] for i in range(0, len(reply), 2)]
        self._remember(target, parse_state(dict(flat)))
