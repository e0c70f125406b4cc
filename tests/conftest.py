"""Test-wide setup: the pipeline tests use Redis DB 3 (other suites use their own DB)."""

import os

os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/3")
