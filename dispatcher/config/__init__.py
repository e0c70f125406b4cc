"""Configuration: the schema, the loader and the secret rules."""

from dispatcher.config.loader import (
    Config,
    ConfigError,
    ProviderStatus,
    Target,
    config_dir,
    expand_vars,
    load_config,
    split_target,
)
from dispatcher.config.models import BUILTIN_TAGS, Limit, ModelConfig, Per, ProviderConfig, Unit

__all__ = [
    "BUILTIN_TAGS",
    "Config",
    "ConfigError",
    "Limit",
    "ModelConfig",
    "Per",
    "ProviderConfig",
    "ProviderStatus",
    "Target",
    "Unit",
    "config_dir",
    "expand_vars",
    "load_config",
    "split_target",
]
