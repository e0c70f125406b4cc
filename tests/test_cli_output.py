"""Reporting commands in pipes and scripts: whole TSV rows when piped, --json documents,
help texts a person can read, the OpenAI batch object."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from dispatcher.batch_object import batch_object
from dispatcher.cli import app
from tests.cluster import TEST_REDIS_URL, model, provider, write_config

SHIPPED = Path(__file__).resolve().parent.parent / "config"
NARROW = {"COLUMNS": "40"}  # a pipe from an 40-column terminal: nothing may be cut

pytestmark = pytest.mark.usefixtures("no_provider_keys")


def tsv(text: str) -> list[dict[str, str]]:
    header, *rows = text.splitlines()
    names = header.split("\t")
    out = []
    for row in rows:
        cells = row.split("\t")
        assert len(cells) == len(names), row
        out.append(dict(zip(names, cells, strict=True)))
    return out


def test_providers_piped_prints_whole_rows_with_a_header():
    res = CliRunner().invoke(app, ["providers", "--config", str(SHIPPED)], env=NARROW)
    assert res.exit_code == 0, res.output
    rows = tsv(res.stdout)
    assert list(rows[0]) == ["provider", "model", "enabled", "reason", "context_window",
                             "max_output_tokens", "vision", "reasoning", "limits"]
    docs = json.loads(CliRunner().invoke(app, ["providers", "--config", str(SHIPPED),
                                               "--json"]).stdout)
    assert [(r["provider"], r["model"]) for r in rows] == [
        (d["provider"], d["model"]) for d in docs]  # every model id whole, none cut
    assert ("cloudflare", "@cf/meta/llama-4-scout-17b-16e-instruct") in {
        (r["provider"], r["model"]) for r in rows}
    groq = next(r for r in rows if r["model"] == "openai/gpt-oss-20b")
    assert groq["enabled"] == "false" and groq["reason"] == "GROQ_API_KEY is not set"
    assert "model:30 requests/minute" in groq["limits"]


def test_providers_json_has_the_contracts_fields():
    docs = json.loads(CliRunner().invoke(app, ["providers", "--config", str(SHIPPED),
                                               "--simulate", "--json"]).stdout)
    for d in docs:
        assert set(d) >= {"provider", "model", "enabled", "reason", "context_window",
                          "max_output_tokens", "vision", "reasoning", "limits"}
        for lim in d["limits"]:
            assert set(lim) == {"unit", "limit", "per", "scope"}
            assert lim["scope"] in ("provider", "model")
    assert all(d["enabled"] and d["reason"] is None for d in docs if d["provider"] != "x")
    cf = next(d for d in docs if d["provider"] == "cloudflare")
    assert {"unit": "neurons", "limit": 10000, "per": "day", "scope": "provider"} in cf["limits"]


def test_config_check_exit_codes_strict_and_json(tmp_path):
    ok = CliRunner().invoke(app, ["config", "check", "--config", str(SHIPPED)])
    assert ok.exit_code == 0  # keys merely unset: they may come later
    assert "tag fast: no usable target" in ok.stderr  # piped: the warning goes to stderr
    rows = tsv(ok.stdout)
    assert [r["tag"] for r in rows] == ["fast", "reasoning", "bulk", "vision"]
    assert all(r["usable_targets"] == "" for r in rows)
    strict = CliRunner().invoke(app, ["config", "check", "--config", str(SHIPPED), "--strict"])
    assert strict.exit_code == 1
    sim = CliRunner().invoke(app, ["config", "check", "--config", str(SHIPPED), "--strict",
                                   "--simulate", "--json"])
    assert sim.exit_code == 0
    doc = json.loads(sim.stdout)
    assert doc["ok"] is True and doc["errors"] == []
    assert doc["tags"]["fast"] == ["groq/openai/gpt-oss-20b", "cloudflare/@cf/openai/gpt-oss-20b",
                                   "openrouter/openai/gpt-oss-20b:free"]
    bad = write_config(tmp_path / "bad", {"a": provider(model("m", limits=[
        {"unit": "requests", "limit": 1, "per": "fortnight"}]))}, {"fast": ["a/m"]})
    res = CliRunner().invoke(app, ["config", "check", "--config", str(bad), "--json"])
    assert res.exit_code == 2
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["tags"] == {}
    assert doc["errors"][0]["file"] == "providers.yaml"
    assert doc["errors"][0]["path"] == "providers.a.models[0].limits[0].per"
    assert "minute" in doc["errors"][0]["message"]
    human = CliRunner().invoke(app, ["config", "check", "--config", str(bad)])
    assert human.exit_code == 2 and "Traceback" not in human.output


def test_config_check_on_a_terminal_names_the_tags_without_a_target():
    res = CliRunner().invoke(app, ["config", "check", "--config", str(SHIPPED)],
                             env={"TTY_COMPATIBLE": "1", "COLUMNS": "200"})
    assert res.exit_code == 0
    assert "valid, but 4 of 4 tags have no usable target: fast, reasoning, bulk, vision" in \
        res.stdout


@pytest.fixture
def stored_batches(tmp_path, monkeypatch):
    """Two batches in a test namespace of the test Redis (created by the job store)."""
    from dispatcher.batchfile import parse_batch
    from dispatcher.config import load_config
    from tests.cluster import job_line
    from workers.jobstore import JobStore

    cfg_dir = write_config(tmp_path / "config", {"alpha": provider(model("a1"))},
                           {"fast": ["alpha/a1"]})
    ns = "tout" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("DISPATCH_NAMESPACE", ns)
    monkeypatch.setenv("DISPATCH_CONFIG", str(cfg_dir))
    r = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    store = JobStore(r, ns)
    specs = parse_batch([job_line("q1", "fast"), job_line("q2", "fast")],
                        load_config(cfg_dir, simulate=True))
    ids = [store.create_batch(specs, simulated=sim, deadline_s=3600, name=f"n{sim}")[0]
           for sim in (True, False)]
    from workers.runtime import reset_runtime

    reset_runtime()
    yield ids
    reset_runtime()
    for key in r.scan_iter(f"{ns}:*"):
        r.delete(key)


def test_status_piped_lists_whole_batch_ids_and_json_is_openai_batch_objects(stored_batches):
    sim_id, live_id = stored_batches
    res = CliRunner().invoke(app, ["status"], env=NARROW)
    assert res.exit_code == 0, res.output
    rows = {r["batch"]: r for r in tsv(res.stdout)}
    assert set(rows) == {sim_id, live_id}  # `dispatch status | grep <id>` finds it
    assert rows[sim_id]["simulated"] == "true" and rows[live_id]["simulated"] == "false"
    assert (rows[sim_id]["total"], rows[sim_id]["pending"]) == ("2", "2")
    listed = json.loads(CliRunner().invoke(app, ["status", "--json"]).stdout)
    assert isinstance(listed, list) and {o["id"] for o in listed} == {sim_id, live_id}
    one = json.loads(CliRunner().invoke(app, ["status", sim_id, "--json"]).stdout)
    assert one["object"] == "batch" and one["status"] == "in_progress"
    assert one["request_counts"] == {"total": 2, "completed": 0, "failed": 0}
    assert one["endpoint"] == "/v1/chat/completions" and one["dispatch"]["simulated"] is True
    missing = CliRunner().invoke(app, ["status", "batch_nope"])
    assert missing.exit_code == 2 and "no batch" in missing.output


def test_batch_object_statuses_and_times():
    base = {"id": "batch_x", "total": 3, "completed": 2, "failed": 1, "created": "1000.7",
            "deadline": "87400.7", "ended": "1500", "providers": {"b": 1, "a": 2},
            "simulated": "0", "name": "in.jsonl"}
    done = batch_object({**base, "status": "in_progress"})  # every job ended
    assert done["status"] == "completed" and done["completed_at"] == 1500
    assert done["created_at"] == 1000 and done["expires_at"] == 87400
    assert done["completion_window"] == "24h"
    assert done["metadata"] == {"name": "in.jsonl"}
    assert done["dispatch"] == {"simulated": False, "providers": {"a": 2, "b": 1}}
    cancelled = batch_object({**base, "status": "cancelled"})
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] == 1500
    assert cancelled["completed_at"] is None
    running = batch_object({**base, "completed": 0, "failed": 0, "status": "in_progress"})
    assert running["status"] == "in_progress" and running["completed_at"] is None


COMMANDS = ["run", "submit", "status", "results", "cancel", "worker", "quota", "providers",
            "config check", "simulate", "beat", "report", "up"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_python_types_or_double_brackets(command):
    res = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = res.output
    for bad in ("<bool>", "<str>", "<int>", "<path>", "[[", "{IN", "{BATCH"):
        assert bad not in text, f"{command} --help shows {bad}"
    assert not re.search(r"\b(TEXT|INTEGER|BOOLEAN|FLOAT)\b", text)
