"""Process settings from the environment (not the configuration directory)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class EnvSettings(BaseSettings):
    """``REDIS_URL``, ``DISPATCH_CONFIG``, ``DISPATCH_STATE_DIR``, ``DISPATCH_NAMESPACE``."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    redis_url: str | None = None
    dispatch_config: str | None = None
    dispatch_state_dir: Path = Path(".dispatch")
    dispatch_namespace: str = "dispatch"
    """Prefix of every Redis key this deployment writes (tests give each run its own)."""


def env() -> EnvSettings:
    return EnvSettings()
