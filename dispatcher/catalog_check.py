"""The catalog check as pure rules: configured models against what a provider lists today.

No I/O here: fetching lives in :mod:`workers.providers.listing`, acting on the result (closing
models, reading quota) in :mod:`workers.catalog_watch`, display in ``dispatch providers
--check``. Keeping the comparison pure lets one set of rules serve the command and the
workers, and lets property tests pin it down.

    >>> r = compare("groq", ["a", "b"], {"a"}, Listing(frozenset({"b", "c"}), frozenset({"c"})))
    >>> r.gone_routed, r.gone_unrouted, r.new_free
    (['a'], [], ['c'])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Exit codes of ``dispatch providers --check`` (CONTRACT.md).
EXIT_OK, EXIT_UNFETCHED, EXIT_ROUTED_GONE = 0, 1, 4

#: The cooldown reason of a model closed by the check (shown by quota, providers, metrics).
NOT_LISTED = "not listed upstream"


@dataclass(frozen=True)
class Listing:
    """What a provider lists today: every model id, and those free to use."""

    ids: frozenset[str]
    free: frozenset[str]


@dataclass(frozen=True)
class ProviderReport:
    """One provider's comparison. ``error`` set: its list could not be fetched, and then
    nothing is concluded about its models (nothing gone, nothing new)."""

    provider: str
    error: str | None = None
    gone_routed: list[str] = field(default_factory=list)
    gone_unrouted: list[str] = field(default_factory=list)
    new_free: list[str] = field(default_factory=list)
    listed: int = 0
    configured: int = 0

    @property
    def fetched(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "fetched": self.fetched,
            "error": self.error,
            "gone_routed": self.gone_routed,
            "gone_unrouted": self.gone_unrouted,
            "new_free": self.new_free,
            "listed": self.listed,
            "configured": self.configured,
        }


def compare(provider: str, configured: Iterable[str], routed: Iterable[str],
            listing: Listing) -> ProviderReport:
    """Configured models the listing lacks (routed ones apart) and free ones it adds.

    Every id keeps the configured order; new free ids are sorted (a stable report)."""
    configured = list(dict.fromkeys(configured))
    routed_set = set(routed)
    gone = [m for m in configured if m not in listing.ids]
    known = set(configured)
    return ProviderReport(
        provider=provider,
        gone_routed=[m for m in gone if m in routed_set],
        gone_unrouted=[m for m in gone if m not in routed_set],
        new_free=sorted(m for m in listing.free if m not in known),
        listed=len(listing.ids),
        configured=len(configured),
    )


def unfetched(provider: str, error: str, configured: int = 0) -> ProviderReport:
    """A provider whose list could not be read: reported as such, nothing concluded."""
    return ProviderReport(provider=provider, error=error, configured=configured)


@dataclass(frozen=True)
class CheckReport:
    """Every checked provider's report, in configuration order."""

    providers: list[ProviderReport]
    simulated: bool = False

    @property
    def exit_code(self) -> int:
        """4 when a routed target is gone; else 1 when a list could not be fetched; else 0."""
        if any(p.gone_routed for p in self.providers):
            return EXIT_ROUTED_GONE
        if any(not p.fetched for p in self.providers):
            return EXIT_UNFETCHED
        return EXIT_OK

    def gone_targets(self) -> list[str]:
        """``provider/model`` of every configured model no longer listed (routed first)."""
        routed = [f"{p.provider}/{m}" for p in self.providers for m in p.gone_routed]
        other = [f"{p.provider}/{m}" for p in self.providers for m in p.gone_unrouted]
        return routed + other

    def listed_targets(self, configured: dict[str, list[str]]) -> list[str]:
        """Configured targets of fetched providers that are listed (the ones to reopen)."""
        out = []
        for p in self.providers:
            if not p.fetched:
                continue
            gone = set(p.gone_routed) | set(p.gone_unrouted)
            out += [f"{p.provider}/{m}" for m in configured.get(p.provider, []) if m not in gone]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == EXIT_OK,
            "exit_code": self.exit_code,
            "simulated": self.simulated,
            "gone_routed": [f"{p.provider}/{m}" for p in self.providers for m in p.gone_routed],
            "providers": [p.to_json() for p in self.providers],
        }
