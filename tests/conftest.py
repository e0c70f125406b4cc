"""Test-wide setup: the pipeline tests use Redis DB 3 (other suites use their own DB)."""

import os

os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/3")


from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests draw the same examples on every run (CI must be deterministic: a new
# failing example found by chance would block a landing that changed nothing near it).
# Explore more on purpose with HYPOTHESIS_PROFILE=explore.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

@pytest.fixture
def store():
    """A job store in a fresh namespace on the test Redis; its keys removed afterwards."""
    import uuid

    import redis

    from tests.cluster import TEST_REDIS_URL
    from workers.jobstore import JobStore

    r = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    ns = "ts" + uuid.uuid4().hex[:8]
    yield JobStore(r, ns)
    for key in r.scan_iter(f"{ns}*", count=1000):
        r.delete(key)


SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config"


def shipped_key_envs() -> set[str]:
    """The key variables the shipped catalog names."""
    doc = yaml.safe_load((SHIPPED_CONFIG / "providers.yaml").read_text())
    return {p["api_key_env"] for p in doc["providers"].values()}


@pytest.fixture
def no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """No provider key and no ${VAR} of the shipped catalog set (a fresh machine)."""
    for name in shipped_key_envs() | {"CLOUDFLARE_ACCOUNT_ID", "DISPATCH_CONFIG"}:
        monkeypatch.delenv(name, raising=False)
