"""The official ``openai`` npm package (6.x, which runs on Node 20) against ``dispatch serve``:
chat and streaming. Skips only when node or npm is absent."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cluster import Cluster, model, provider, write_config
from tests.gateway_server import GatewayServer

JS = Path(__file__).parent / "js"
pytestmark = pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")),
                                reason="node and npm are needed")


def _install() -> None:
    if (JS / "node_modules" / "openai" / "package.json").exists():
        return
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS,
                   check=True, timeout=240, capture_output=True)


def test_openai_npm_package_chat_and_streaming(tmp_path: Path) -> None:
    _install()
    cfg = write_config(tmp_path / "config", {"p": provider(model("m1"))}, {"fast": ["p/m1"]})
    with Cluster(cfg, tmp_path) as cluster, GatewayServer(cfg, tokens=["js-token-1"]) as gw:
        run = subprocess.run(["node", "gateway_check.mjs", f"{gw.url}/v1", "js-token-1"],
                             cwd=JS, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        got = json.loads(run.stdout.strip().splitlines()[-1])
        assert cluster.stats()["totals"]["ok"] == 2
    assert got["content"].startswith("Simulated reply from p/m1")
    assert got["target"] == "p/m1" and got["completionTokens"] == 8
    assert got["streamed"].startswith("Simulated reply from p/m1") and got["chunks"] >= 3
    assert got["usage"]["total_tokens"] > 0
    assert got["notFound"] == {"status": 404, "code": "model_not_found"}
