"""Auth, bind rules, size limits and error shapes of ``dispatch serve`` (real server)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from dispatcher.gateway.auth import check_bind, is_loopback, parse_tokens, token_ok
from tests.cluster import Cluster, model, provider, write_config
from tests.gateway_server import GatewayServer

TOKENS = ["tok-alpha-123", "tok-beta-456"]


def test_loopback_rule() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert check_bind("127.0.0.1", []) is None
    assert "DISPATCH_API_KEYS" in (check_bind("0.0.0.0", []) or "")
    assert check_bind("0.0.0.0", ["t"]) is None


@given(st.lists(st.text(alphabet="abcdef0123456789-", min_size=1, max_size=12), min_size=1,
                max_size=4), st.text(max_size=20))
def test_token_check_accepts_exactly_the_configured_tokens(tokens: list[str], other: str) -> None:
    assert all(token_ok(f"Bearer {t}", tokens) for t in tokens)
    assert token_ok(f"bearer {tokens[0]}", tokens)
    assert token_ok(f"Bearer {other}", tokens) == (other.strip() in tokens)
    assert not token_ok(None, tokens) and not token_ok(tokens[0], tokens)
    assert parse_tokens(",".join(f" {t} " for t in tokens)) == tokens


def test_serve_refuses_a_public_address_without_tokens(monkeypatch) -> None:
    from dispatcher.cli import app

    monkeypatch.delenv("DISPATCH_API_KEYS", raising=False)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--simulate"])
    assert result.exit_code == 2
    assert "DISPATCH_API_KEYS" in result.output


@pytest.fixture
def server(tmp_path: Path):
    cfg = write_config(tmp_path / "config", {"p": provider(model("m1"))}, {"fast": ["p/m1"]},
                       settings={"gateway": {"max_request_mb": 0.01}})
    with Cluster(cfg, tmp_path), GatewayServer(cfg, tokens=TOKENS) as gw:
        yield gw


def _error(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_tokens_size_limits_and_error_shapes(server: GatewayServer) -> None:
    url = server.url
    ok = {"Authorization": f"Bearer {TOKENS[1]}"}
    assert httpx.get(f"{url}/healthz").json()["ok"] is True          # open
    assert httpx.get(f"{url}/openapi.json").json()["openapi"].startswith("3.")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKENS[0]}):
        r = httpx.get(f"{url}/v1/models", headers=headers)
        assert r.status_code == 401 and _error(r)["code"] == "invalid_api_key"
    assert httpx.get(f"{url}/v1/models", headers=ok).status_code == 200

    big = {"model": "fast", "messages": [{"role": "user", "content": "x" * 20_000}]}
    r = httpx.post(f"{url}/v1/chat/completions", json=big, headers=ok)
    assert r.status_code == 413 and _error(r)["code"] == "request_too_large"

    def chunked():
        yield json.dumps(big).encode()

    r = httpx.post(f"{url}/v1/chat/completions", content=chunked(), headers=ok)
    assert r.status_code == 413                                       # no Content-Length

    r = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers=ok)
    assert r.status_code == 400 and _error(r)["code"] == "invalid_json"
    r = httpx.post(f"{url}/v1/chat/completions", json=[1], headers=ok)
    assert r.status_code == 400
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": "fast"}, headers=ok)
    assert r.status_code == 400 and _error(r)["code"] == "no_messages"
    r = httpx.get(f"{url}/v1/nothing-here", headers=ok)
    assert r.status_code == 404 and _error(r)["code"] == "unknown_url"
    r = httpx.delete(f"{url}/v1/models", headers=ok)
    assert r.status_code == 405 and _error(r)["type"] == "invalid_request_error"


def test_compose_gateway_service_needs_tokens_and_publishes_on_loopback() -> None:
    import yaml

    from tests.test_compose import COMPOSE

    svc = yaml.safe_load(COMPOSE.read_text())["services"]["gateway"]
    assert svc["command"][:3] == ["serve", "--host", "0.0.0.0"]
    assert svc["environment"]["DISPATCH_API_KEYS"].startswith("${DISPATCH_API_KEYS:?")
    assert all(p.startswith("127.0.0.1:") for p in svc["ports"])
    assert "/healthz" in " ".join(svc["healthcheck"]["test"])
