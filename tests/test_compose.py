"""docker-compose.yml: the topology it declares, and that docker-compose accepts it.

The structure is checked with PyYAML everywhere; ``docker-compose config -q`` (Debian's
docker-compose 1.29 validates the 3.x schema and the interpolation) runs when the binary
is installed — no Docker engine is needed for either.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
EXAMPLE = ROOT / ".env.example"
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def providers() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "config" / "providers.yaml").read_text())["providers"]


def provider_vars(p: dict) -> set[str]:
    """The environment variables a provider needs: its key and any in its base_url."""
    return {p["api_key_env"], *VAR.findall(p["base_url"])}


def command(svc: dict) -> list[str]:
    cmd = svc.get("command", [])
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def test_redis_is_durable_private_and_password_protected():
    redis = services()["redis"]
    cmd = " ".join(command(redis))
    assert redis["image"].startswith("redis:7")
    for flag in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert flag in cmd
    assert re.search(r"--requirepass \$\{REDIS_PASSWORD:\?", cmd), "must refuse an unset password"
    assert "ports" not in redis, "Redis is reachable from the compose network only"
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    assert redis["healthcheck"]["test"]
    assert redis.get("restart") in ("always", "unless-stopped")


def test_one_worker_per_provider_with_only_its_own_key():
    svcs = services()
    provs = providers()
    all_vars = set().union(*(provider_vars(p) for p in provs.values()))
    workers = {n: s for n, s in svcs.items() if "--provider" in command(s)}
    by_provider = {command(s)[command(s).index("--provider") + 1]: n for n, s in workers.items()}
    assert set(by_provider) == set(provs), "one worker service per configured provider"
    for name, svc_name in by_provider.items():
        svc = svcs[svc_name]
        assert command(svc)[0] == "worker"
        env = svc["environment"]
        own = provider_vars(provs[name])
        assert own <= set(env), f"{svc_name} lacks {own - set(env)}"
        assert not (all_vars - own) & set(env), f"{svc_name} sees another provider's key"
        for var in own:
            assert env[var] == f"${{{var}}}", "keys come from .env, never the file"


def test_router_beat_and_flower():
    svcs = services()
    assert command(svcs["router"]) == ["worker"]
    assert command(svcs["beat"]) == ["beat"]
    flower = svcs["flower"]
    assert command(flower)[0] == "flower"
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert all(str(p).startswith("127.0.0.1:") for p in flower.get("ports", []))
    # Beat's state (schedule, lock) is in Redis: no beat-schedule file, no volume for it.
    assert "--schedule" not in command(svcs["beat"])


def test_every_app_service_has_redis_url_restart_and_the_image():
    for name, svc in services().items():
        if name == "redis":
            continue
        env = svc["environment"]
        assert env["REDIS_URL"] == "redis://:${REDIS_PASSWORD}@redis:6379/0", name
        assert svc.get("restart") in ("always", "unless-stopped"), name
        assert svc["build"] == "." and svc["depends_on"]["redis"]["condition"] == \
            "service_healthy", name


def test_no_literal_secrets_and_the_example_env_is_empty():
    text = COMPOSE.read_text()
    for line in text.splitlines():
        m = re.match(r"\s*([A-Z][A-Z0-9_]*(KEY|TOKEN|PASSWORD|AUTH)[A-Z0-9_]*):\s*(.*)", line)
        if m:
            assert m.group(3).startswith("${"), f"literal secret? {line.strip()}"
    assert not re.search(r"(sk-|gsk_|nvapi-)[A-Za-z0-9]{8,}", text)
    for line in EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert value == "" or "change-me" in value, f".env.example: a real value for {name}?"
    names = {ln.partition("=")[0] for ln in EXAMPLE.read_text().splitlines()
             if ln and not ln.startswith("#")}
    needed = set().union(*(provider_vars(p) for p in providers().values()))
    assert needed | {"REDIS_PASSWORD", "FLOWER_BASIC_AUTH"} <= names
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in dockerignore, "the build context must never contain .env"


@pytest.fixture
def compose_bin() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.skip("docker-compose binary not installed (apt-get install docker-compose); "
                    "the YAML structure is still checked by the other tests")
    return path


def _config(compose_bin: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    # A clean environment: the shell's variables would override the env file's.
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return subprocess.run(
        [compose_bin, "-f", str(COMPOSE), "--env-file", str(env_file), "config", "-q"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )


def test_docker_compose_validates_the_file(compose_bin, tmp_path):
    # A clean clone has no .env: the example in its place validates.
    ok = _config(compose_bin, EXAMPLE)
    assert ok.returncode == 0, ok.stderr
    # ...but no deployment starts without a Redis password or a Flower login.
    for name in ("REDIS_PASSWORD", "FLOWER_BASIC_AUTH"):
        empty = tmp_path / f"no-{name}.env"
        empty.write_text(re.sub(rf"^{name}=.*$", f"{name}=", EXAMPLE.read_text(), flags=re.M))
        refused = _config(compose_bin, empty)
        assert refused.returncode != 0 and name in refused.stderr


def test_the_image_gets_every_lua_script():
    """``pip install .`` must ship the Lua scripts the workers load (the Dockerfile checks too)."""
    import fnmatch
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = data["tool"]["setuptools"].get("package-data", {})
    missing = []
    for path in sorted((ROOT / "workers").rglob("*.lua")):
        rel = path.relative_to(ROOT)
        shipped = False
        for package, globs in package_data.items():
            pdir = Path(*package.split("."))
            if pdir in rel.parents:
                inner = rel.relative_to(pdir).as_posix()
                shipped = shipped or any(fnmatch.fnmatch(inner, g) for g in globs)
        if not shipped:
            missing.append(str(rel))
    assert not missing, f"not in pyproject package-data, so not in the image: {missing}"
