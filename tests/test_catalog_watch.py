"""The catalog check end to end: the command against the real simulator and a real HTTP
server, and real workers closing (then reopening) a model the simulator stopped listing.

Real parts only: the project's HTTP simulator, `dispatch worker` subprocesses on the real
Redis (DB 3, a random namespace), the CLI through typer's runner.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatcher.catalog_check import NOT_LISTED
from dispatcher.cli import app
from dispatcher.config import load_config
from tests.cluster import Cluster, job_line, model, provider, write_config
from tests.conftest import SHIPPED_CONFIG
from workers.simulator import Simulator

ROUTED = ("groq", "openai/gpt-oss-20b")  # first target of `fast` in the shipped catalog


@pytest.fixture
def shipped_sim():
    sim = Simulator(load_config(SHIPPED_CONFIG, simulate=True)).start()
    try:
        yield sim
    finally:
        sim.stop()


def _check(sim_url: str, *extra: str):
    return CliRunner().invoke(
        app, ["providers", "--check", "--simulate", "--config", str(SHIPPED_CONFIG), *extra],
        env={"DISPATCH_SIMULATOR_URL": sim_url, "COLUMNS": "200"})


def test_check_names_a_dropped_routed_model_and_exits_4(shipped_sim) -> None:
    shipped_sim.drop_model(*ROUTED)
    shipped_sim.drop_model("nvidia", "meta/llama-3.2-90b-vision-instruct")  # not routed
    result = _check(shipped_sim.url)
    assert result.exit_code == 4, result.output
    assert "ROUTED TARGET GONE: groq/openai/gpt-oss-20b" in result.stderr  # loudly
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows[0] == ["provider", "finding", "model"]
    assert rows[1] == ["groq", "gone_routed", "openai/gpt-oss-20b"]  # routed ones first
    assert ["nvidia", "gone", "meta/llama-3.2-90b-vision-instruct"] in rows
    assert all(len(row) == 3 for row in rows)

    doc = json.loads(_check(shipped_sim.url, "--json").stdout)
    assert doc["exit_code"] == 4 and doc["gone_routed"] == ["groq/openai/gpt-oss-20b"]
    nvidia = next(p for p in doc["providers"] if p["provider"] == "nvidia")
    assert nvidia["gone_unrouted"] == ["meta/llama-3.2-90b-vision-instruct"]


def test_check_passes_when_everything_is_listed(shipped_sim) -> None:
    result = _check(shipped_sim.url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True


def test_simulator_drop_flag_and_admin_hook(shipped_sim) -> None:
    import httpx

    url = f"{shipped_sim.url}/groq/v1/models"
    listed = {m["id"] for m in httpx.get(url, headers={"authorization": "Bearer x"}).json()["data"]}
    assert listed == {"openai/gpt-oss-20b", "openai/gpt-oss-120b", "qwen/qwen3.6-27b"}
    r = httpx.post(f"{shipped_sim.url}/_sim/drop", json={"provider": "groq",
                                                         "model": "openai/gpt-oss-120b"})
    assert r.json()["dropped"] == ["groq/openai/gpt-oss-120b"]
    listed = {m["id"] for m in httpx.get(url, headers={"authorization": "Bearer x"}).json()["data"]}
    assert "openai/gpt-oss-120b" not in listed
    called = httpx.post(f"{shipped_sim.url}/groq/v1/chat/completions",
                        headers={"authorization": "Bearer x"},
                        json={"model": "openai/gpt-oss-120b",
                              "messages": [{"role": "user", "content": "hi"}]})
    assert called.status_code == 404 and "decommissioned" in called.text
    bad = httpx.post(f"{shipped_sim.url}/_sim/drop", json={"provider": "groq", "model": "nope"})
    assert bad.status_code == 400 and "unknown model" in bad.text
    refused = CliRunner().invoke(app, ["simulate", "--config", str(SHIPPED_CONFIG),
                                       "--drop-model", "groq/nope", "--port", "0"])
    assert refused.exit_code == 2 and "--drop-model groq/nope: unknown model" in refused.output


class _JsonServer(BaseHTTPRequestHandler):
    """A real local provider: ``answer(path, headers)`` -> ``(status, JSON document)``."""

    def answer(self, path: str, headers) -> tuple[int, dict]:
        raise NotImplementedError

    def do_GET(self) -> None:  # noqa: N802
        status, doc = self.answer(self.path, self.headers)
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _Echo(_JsonServer):
    """A provider that refuses every list and echoes the Authorization header back."""

    def answer(self, path: str, headers) -> tuple[int, dict]:
        return 401, {"error": f"bad key {headers.get('authorization')}"}


def test_unfetchable_list_exits_1_redacts_the_key_and_closes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _serve(_Echo)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/v1"
        cfg_dir = write_config(tmp_path / "cfg", {
            "echo": provider(model("m1"), base_url=base, api_key_env="ECHO_TEST_KEY")},
            {"fast": ["echo/m1"]})
        key = "sk-echo-0123456789abcdef0123456789"
        monkeypatch.setenv("ECHO_TEST_KEY", key)
        result = CliRunner().invoke(app, ["providers", "--check", "--json",
                                          "--config", str(cfg_dir)])
        assert result.exit_code == 1, result.output
        doc = json.loads(result.stdout)
        echo = doc["providers"][0]
        assert not echo["fetched"] and "HTTP 401" in echo["error"]
        assert echo["gone_routed"] == [] and key not in result.output
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------- workers, end to end


def _wait(predicate, timeout: float = 90.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_workers_close_an_unlisted_model_route_past_it_and_reopen_it(tmp_path: Path) -> None:
    providers = {
        "a": provider(model("m1"), model("m2")),
        "b": provider(model("m3")),
        "orr": provider(model("f1:free"), dialect="openrouter",
                        limits=[{"unit": "requests", "limit": 50, "per": "day"}]),
    }
    cfg_dir = write_config(tmp_path / "cfg", providers, {"fast": ["a/m1", "b/m3"]},
                           settings={"catalog": {"check_every_s": 2}})
    with Cluster(cfg_dir, tmp_path) as cluster:
        cluster.sim.drop_model("a", "m1")
        # OpenRouter's key endpoint reports 45 of its 50 free requests used elsewhere.
        for _ in range(45):
            cluster.sim._count("orr/f1:free", received=1)
        cluster.start_worker("--all", name="w")
        from workers.runtime import get_runtime

        rt = get_runtime()
        engine = rt.quota(True)
        m1 = rt.config.target("a/m1")
        _wait(lambda: engine.cooldown_of(m1)[1] == NOT_LISTED, what="a/m1 closed")
        assert engine.cooldown_of(rt.config.target("a/m2"))[0] == 0  # listed: untouched

        lines = cluster.wait(cluster.submit([job_line(f"j{i}", "fast") for i in range(3)]))
        assert [ln["dispatch"]["provider"] + "/" + ln["dispatch"]["model"] for ln in lines] \
            == ["b/m3"] * 3
        assert cluster.stats()["targets"]["a/m1"]["received"] == 0  # not a single wasted call

        # Visible: dispatch quota, the metric, and the task (Flower sees the task events).
        quota = CliRunner().invoke(app, ["quota", "--simulated", "--config", str(cfg_dir)],
                                   env={"COLUMNS": "200"})
        assert "a/m1: paused" in quota.stderr and NOT_LISTED in quota.stderr  # piped: notes
        listing = CliRunner().invoke(app, ["providers", "--simulate", "--config", str(cfg_dir)])
        assert "closed: a/m1 (not listed upstream" in listing.stderr
        from workers.catalog_watch import UnlistedCollector

        samples = [s for fam in UnlistedCollector().collect() for s in fam.samples]
        assert [(s.labels["provider"], s.labels["model"]) for s in samples] == [("a", "m1")]
        assert "dispatch.catalog_check" in cluster.log("w")
        # OpenRouter's reported usage tightened the daily counter (5 left of 50).
        day = next(s for s in engine.snapshot() if s.provider == "orr" and s.per == "day")
        assert day.remaining <= 5

        cluster.sim.drop_model("a", "m1", restore=True)
        _wait(lambda: engine.cooldown_of(m1)[0] == 0, what="a/m1 reopened")
        lines = cluster.wait(cluster.submit([job_line("again", "fast")]))
        assert lines[0]["dispatch"]["provider"] == "a"


class _Cloudflare(_JsonServer):
    """Workers AI's model search: two pages in the v4 envelope; needs the bearer token."""

    token = "test-key-cloudflare"

    def answer(self, path: str, headers) -> tuple[int, dict]:
        from urllib.parse import parse_qs, urlparse

        url = urlparse(path)
        if headers.get("authorization") != f"Bearer {self.token}":
            return 403, {"success": False, "errors": [{"code": 10000,
                                                       "message": "Authentication error"}]}
        if url.path != "/client/v4/accounts/ACC/ai/models/search":
            return 404, {"success": False, "errors": [{"message": "no route"}]}
        page = int(parse_qs(url.query)["page"][0])
        names = [["@cf/a", "@cf/b"], ["@cf/c"]][page - 1]
        return 200, {"success": True, "result": [{"id": f"uuid-{n}", "name": n} for n in names],
                     "result_info": {"page": page, "per_page": 2, "total_count": 3}}


def test_live_check_reads_cloudflare_model_search_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _serve(_Cloudflare)
    try:
        port = server.server_address[1]
        neurons = {"input_per_million": 1, "output_per_million": 1}
        cfg_dir = write_config(tmp_path / "cfg", {"cloudflare": provider(
            model("@cf/a", neurons=neurons), model("@cf/gone", neurons=neurons),
            dialect="cloudflare", api_key_env="CF_TEST_TOKEN",
            base_url=f"http://127.0.0.1:{port}/client/v4/accounts/${{CF_TEST_ACCOUNT}}/ai/v1",
            limits=[{"unit": "neurons", "limit": 10000, "per": "day"}])},
            {"fast": ["cloudflare/@cf/gone"], "bulk": ["cloudflare/@cf/a"]})
        monkeypatch.setenv("CF_TEST_ACCOUNT", "ACC")
        monkeypatch.setenv("CF_TEST_TOKEN", _Cloudflare.token)
        result = CliRunner().invoke(app, ["providers", "--check", "--json",
                                          "--config", str(cfg_dir)])
        assert result.exit_code == 4, result.output
        cf = json.loads(result.stdout)["providers"][0]
        assert cf["gone_routed"] == ["@cf/gone"] and cf["listed"] == 3
        assert cf["new_free"] == ["@cf/b", "@cf/c"]  # the second page was read too
        monkeypatch.setenv("CF_TEST_TOKEN", "wrong-token-0123456789")
        denied = CliRunner().invoke(app, ["providers", "--check", "--json",
                                          "--config", str(cfg_dir)])
        assert denied.exit_code == 1 and "HTTP 403" in denied.stdout
    finally:
        server.shutdown()
        server.server_close()


def test_openrouter_reported_usage_only_tightens(tmp_path: Path) -> None:
    from workers.catalog_watch import observe_openrouter

    providers = {"orr": provider(model("f1:free"), dialect="openrouter",
                                 limits=[{"unit": "requests", "limit": 50, "per": "day"}])}
    cfg_dir = write_config(tmp_path / "cfg", providers, {"fast": ["orr/f1:free"]})
    with Cluster(cfg_dir, tmp_path) as cluster:
        from workers.quota.costs import Cost
        from workers.runtime import get_runtime

        rt = get_runtime()
        engine = rt.quota(True)
        target = rt.config.target("orr/f1:free")
        for _ in range(20):  # we sent 20 today; OpenRouter saw only 3 of them so far
            assert engine.reserve(target, Cost(1, 0, 0)).granted
        for _ in range(3):
            cluster.sim._count("orr/f1:free", received=1)
        base = f"{cluster.sim.url}/orr/v1"
        assert observe_openrouter(engine, rt.config, base, "simulated") == 47
        day = next(s for s in engine.snapshot() if s.per == "day")
        assert day.used == 20  # looser report: our stricter count stands
        for _ in range(30):
            cluster.sim._count("orr/f1:free", received=1)
        assert observe_openrouter(engine, rt.config, base, "simulated") == 17
        day = next(s for s in engine.snapshot() if s.per == "day")
        assert day.used == 33 and day.remaining == 17  # tighter report: adopted


def test_only_a_not_listed_closure_is_lifted(tmp_path: Path) -> None:
    """Reopening a model listed again never lifts another pause (a 429, a key rejected)."""
    import uuid

    import redis as redis_lib

    from tests.cluster import TEST_REDIS_URL
    from workers.quota.engine import QuotaEngine

    cfg_dir = write_config(tmp_path / "cfg", {"a": provider(model("m1"), model("m2"))},
                           {"fast": ["a/m1"]})
    cfg = load_config(cfg_dir, simulate=True)
    r = redis_lib.Redis.from_url(TEST_REDIS_URL)
    ns = "t" + uuid.uuid4().hex[:8]
    engine = QuotaEngine(r, cfg, namespace=ns, simulated=True)
    m1, m2 = cfg.target("a/m1"), cfg.target("a/m2")
    try:
        engine.cooldown(m1, 600, "model", "429 from upstream")
        engine.cooldown(m2, 600, "model", NOT_LISTED)
        assert not engine.lift_cooldown(m1, NOT_LISTED)
        assert engine.cooldown_of(m1)[1] == "429 from upstream"
        assert engine.lift_cooldown(m2, NOT_LISTED)
        assert engine.cooldown_of(m2)[0] == 0
        assert not engine.lift_cooldown(m2, NOT_LISTED)  # nothing left to lift
    finally:
        for key in r.scan_iter(f"{ns}*"):
            r.delete(key)
