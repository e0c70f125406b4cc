"""schemathesis against ``/openapi.json`` of a real gateway: every check it has (no 500s,
documented statuses, content types and headers, response schemas, invalid input refused,
valid input accepted, auth not ignored), a fixed seed and a bounded example count."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.cluster import Cluster, model, provider, write_config
from tests.gateway_server import GatewayServer


def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    big = [{"unit": "requests", "limit": 100000, "per": "minute"}]
    cfg = write_config(tmp_path / "config",
                       {"p": provider(model("m1"), model("m2", vision=True), limits=big)},
                       {"fast": ["p/m1"], "vision": ["p/m2"]})
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    with Cluster(cfg, tmp_path), GatewayServer(cfg, tokens=["st-token-1"]) as gw:
        run = subprocess.run(
            [st, "run", f"{gw.url}/openapi.json", "--checks", "all",
             "-H", "Authorization: Bearer st-token-1", "--max-examples", "25", "--seed", "1",
             "--workers", "2", "--no-color"],
            capture_output=True, text=True, timeout=240,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""}, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:]
