"""``dispatch flower``: exposure rules, and Flower on a real setup showing ids, never prompts.

The REST checks need only httpx and always run; the page checks drive headless Chromium
(the same code as ``scripts/flower_check.py``) and skip only when Chromium is absent.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dispatcher.cli import app
from dispatcher.commands.flower import check_exposure, flower_argv, is_loopback, valid_basic_auth

ROOT = Path(__file__).resolve().parent.parent


def _load_check() -> Any:
    spec = importlib.util.spec_from_file_location("flower_check", ROOT / "scripts" /
                                                  "flower_check.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["flower_check"] = mod
    spec.loader.exec_module(mod)
    return mod


fc = _load_check()


# ------------------------------------------------------------------ exposure rules
@pytest.mark.parametrize("addr,loop", [("127.0.0.1", True), ("127.1.2.3", True),
                                       ("::1", True), ("[::1]", True), ("localhost", True),
                                       ("", False), ("0.0.0.0", False), ("::", False),
                                       ("10.0.0.5", False), ("example.org", False)])
def test_is_loopback(addr, loop):
    assert is_loopback(addr) is loop


def test_non_loopback_needs_auth():
    assert check_exposure("127.0.0.1", None, {}) is None
    assert "without authentication" in check_exposure("0.0.0.0", None, {})
    assert "every interface" in check_exposure("", None, {})
    assert check_exposure("0.0.0.0", "ops:s3cret", {}) is None
    oauth = {"FLOWER_AUTH_PROVIDER": "flower.views.auth.GithubLoginHandler",
             "FLOWER_AUTH": ".*@example.org"}
    assert check_exposure("0.0.0.0", None, oauth) is None
    assert "user:password" in check_exposure("0.0.0.0", "nopassword", {})
    assert valid_basic_auth("a:b,c:d") and not valid_basic_auth("a:b,c")


def test_argv_carries_no_credentials_and_shows_args():
    argv = flower_argv(5555, "127.0.0.1")
    assert argv[:3] == ["flower", "--port=5555", "--address=127.0.0.1"]
    assert any(a.startswith("--tasks_columns=") and "args" in a for a in argv)
    assert not any("basic" in a for a in argv)


def test_cli_refuses_public_bind_without_auth(monkeypatch):
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    res = CliRunner().invoke(app, ["flower", "--address", "0.0.0.0"])
    assert res.exit_code == 2 and "without authentication" in res.output


# ------------------------------------------------------------------ a real setup
@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("flower")
    with fc.demo(tmp, jobs=4) as d:
        d.tmp = tmp
        yield d


def test_api_lists_tasks_by_ids_and_queue_lengths_never_prompts(demo):
    found = fc.check_api(demo)  # asserts: 401 without auth, argsrepr, queues, no marker
    assert found["calls"] >= 4
    for q in fc.expected_queues():
        assert found["queues"][q] >= 0


@pytest.mark.skipif(fc.chromium_path() is None,
                    reason="chromium is not installed (apt-get install chromium)")
def test_pages_in_a_browser(demo):
    shot = demo.tmp / "flower.png"
    fc.check_pages(demo, demo.tmp, shot)  # asserts tasks/broker DOM, no marker
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
