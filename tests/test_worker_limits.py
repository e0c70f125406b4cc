"""Every worker process checks its limits, however it was started, against a fingerprint
of every input of a charge."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
import yaml

from dispatcher.config import load_config
from tests.cluster import ROOT, TEST_REDIS_URL, model, provider, write_config
from workers.quota.limits import fingerprint_key

NEURONS = {"input_per_million": 30000, "output_per_million": 70000}


def _write(directory: Path, model_extra: dict | None = None, provider_extra: dict | None = None,
           settings: dict | None = None) -> str:
    m = model("a1", limits=[{"unit": "neurons", "limit": 1000, "per": "day"}],
              **{"neurons": NEURONS, **(model_extra or {})})
    write_config(directory, {"alpha": provider(m, **(provider_extra or {}))},
                 {"fast": ["alpha/a1"]}, settings or {})
    return load_config(directory).limits_fingerprint()


@pytest.mark.parametrize("change", [
    {"model_extra": {"neurons": {"input_per_million": 30000, "output_per_million": 80000}}},
    {"model_extra": {"max_output_tokens": 512}},
    {"model_extra": {"default_max_tokens": 256}},
    {"provider_extra": {"count_429_tokens": False}},
    {"provider_extra": {"timezone": "Europe/Paris"}},
    {"settings": {"jobs": {"default_max_tokens": 512}}},
    {"settings": {"quota": {"chars_per_token": 3.5}}},
    {"settings": {"quota": {"message_overhead_tokens": 6}}},
    {"settings": {"quota": {"image_tokens": 1000}}},
    {"settings": {"quota": {"timing_margin_ms": 10}}},
    {"settings": {"quota": {"estimator": {"margin": 0.2}}}},
    {"settings": {"quota": {"estimator": {"cjk_tokens_per_char": 1.5}}}},
    {"settings": {"quota": {"estimator": {"learn": False}}}},
], ids=lambda c: yaml.safe_dump(c, default_flow_style=True).strip())
def test_the_fingerprint_covers_every_input_of_a_charge(tmp_path: Path, change: dict) -> None:
    base = _write(tmp_path / "a")
    assert _write(tmp_path / "b") == base  # deterministic
    assert _write(tmp_path / "c", **change) != base


def test_operational_settings_do_not_change_it(tmp_path: Path) -> None:
    base = _write(tmp_path / "a")
    assert _write(tmp_path / "b", provider_extra={"concurrency": 9, "timeout_s": 3},
                  settings={"routing": {"horizon_s": 5}}) == base


def _celery_worker(config_dir: Path, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": TEST_REDIS_URL, "DISPATCH_NAMESPACE": namespace,
           "DISPATCH_CONFIG": str(config_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-P", "threads",
         "-c", "1", "-Q", f"{namespace}.none", "-n", f"{namespace}@test", "--without-gossip",
         "--without-mingle", "--without-heartbeat", "-l", "info"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        start_new_session=True)


def test_a_plain_celery_worker_refuses_other_limits_and_starts_with_the_same(
        tmp_path: Path) -> None:
    r = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    ns = f"wl{uuid.uuid4().hex[:8]}"
    mine = _write(tmp_path / "c")
    try:
        r.set(fingerprint_key(ns), "0123456789abcdef")  # others run with other limits
        proc = _celery_worker(tmp_path / "c", ns, tmp_path / "refused.log")
        assert proc.wait(timeout=120) == 2
        text = (tmp_path / "refused.log").read_text()
        assert "refuses to start" in text and "differ from those in force" in text
        assert mine in text and "0123456789abcdef" in text
        r.set(fingerprint_key(ns), mine)  # the same limits: it runs
        proc = _celery_worker(tmp_path / "c", ns, tmp_path / "ok.log")
        try:
            end = time.monotonic() + 120
            while "ready" not in (tmp_path / "ok.log").read_text() and proc.poll() is None \
                    and time.monotonic() < end:
                time.sleep(0.2)
            assert proc.poll() is None, (tmp_path / "ok.log").read_text()
            assert "ready" in (tmp_path / "ok.log").read_text()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        for key in list(r.scan_iter(f"{ns}*", count=1000)):
            r.delete(key)
        r.close()
