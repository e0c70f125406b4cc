"""Recognising and redacting API keys.

Keys reach the process only through the environment. These helpers keep them out of
config files (refused at load) and out of every log line, error and result (redacted).

    >>> looks_like_secret("gsk_" + "a" * 40)
    True
    >>> redact("Authorization: Bearer nvapi-" + "x" * 30)
    'Authorization: Bearer [REDACTED]'
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

_KNOWN_PREFIXES = re.compile(
    r"(gsk_[A-Za-z0-9]{16,}|nvapi-[A-Za-z0-9_-]{16,}|sk-or-[A-Za-z0-9_-]{16,}"
    r"|sk-[A-Za-z0-9_-]{24,}|xai-[A-Za-z0-9]{20,}|hf_[A-Za-z0-9]{20,}|AIza[0-9A-Za-z_-]{30,})"
)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_GENERIC_TOKEN = re.compile(r"^[A-Za-z0-9_\-.]{32,}$")


def looks_like_secret(value: str) -> bool:
    """True for a string that looks like an API key or bearer token.

    Known vendor prefixes always count; otherwise a long unbroken token that mixes
    upper case, lower case and digits (model ids and URLs have '/' or are lowercase).
    """
    if _KNOWN_PREFIXES.search(value) or _BEARER.search(value):
        return True
    if _GENERIC_TOKEN.match(value):
        classes = sum(
            bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]")
        )
        return classes == 3 or bool(re.fullmatch(r"[0-9a-fA-F]{40,}", value))
    return False


def _env_secrets(names: Iterable[str]) -> list[str]:
    values = []
    for name in names:
        v = os.environ.get(name)
        if v and len(v) >= 6:
            values.append(v)
    return values


_registered: set[str] = set()


def register_key_env(names: Iterable[str]) -> None:
    """Remember which environment variables hold keys, so their values are redacted."""
    _registered.update(names)


def redact(text: str, extra_env: Iterable[str] = ()) -> str:
    """Remove every known key value and anything key-shaped from ``text``."""
    if not text:
        return text
    for value in _env_secrets([*_registered, *extra_env]):
        text = text.replace(value, "[REDACTED]")
    text = _BEARER.sub(r"\1[REDACTED]", text)
    return _KNOWN_PREFIXES.sub("[REDACTED]", text)
