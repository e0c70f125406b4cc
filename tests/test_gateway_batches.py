"""Files and batches over HTTP with the official ``openai`` SDK, on the same job store and
the same workers as ``dispatch run`` (a real ``dispatch worker --all`` subprocess)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.cluster import Cluster, job_line, model, provider, write_config
from tests.gateway_server import GatewayServer


@pytest.fixture
def env(tmp_path: Path):
    cfg = write_config(tmp_path / "config", {"p": provider(model("m1"), model("m2"))},
                       {"fast": ["p/m1"], "bulk": ["p/m2"]})
    with Cluster(cfg, tmp_path) as cluster, GatewayServer(cfg) as gw:
        cluster.start_worker("--all")
        client = openai.OpenAI(api_key="unused", base_url=f"{gw.url}/v1", max_retries=0)
        yield cluster, gw, client


def _wait_ended(client: openai.OpenAI, batch_id: str, timeout: float = 90):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} did not end: {batch}")


def test_upload_batch_poll_download_and_the_openai_split(env, tmp_path: Path) -> None:
    cluster, gw, client = env
    cluster.sim.inject("p", "400", count=1, model="m2")    # one line answered 400 upstream
    lines = [job_line(f"r{i}", "fast", max_tokens=6) for i in range(5)]
    lines.append(job_line("bad", "bulk"))
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    f = client.files.create(file=src.open("rb"), purpose="batch")
    assert f.bytes == src.stat().st_size and f.filename == "in.jsonl"
    assert client.files.content(f.id).read() == src.read_bytes()
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"run": "t1"})
    assert batch.status == "in_progress" and batch.metadata == {"run": "t1"}
    assert cluster.batch(batch.id)["total"] == 6          # the same job store `status` reads

    done = _wait_ended(client, batch.id)
    assert done.status == "completed" and done.completed_at
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (6, 5, 1)
    out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    err = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert sorted(x["custom_id"] for x in out) == [f"r{i}" for i in range(5)]
    assert all(x["response"]["status_code"] == 200 for x in out)
    assert [x["custom_id"] for x in err] == ["bad"] and len(err) == done.request_counts.failed
    assert err[0]["response"]["status_code"] == 400
    assert err[0]["dispatch"]["simulated"] is True

    # `dispatch status` shows the same batch (OpenAI objects with --json elsewhere)
    from typer.testing import CliRunner

    from dispatcher.cli import app
    shown = CliRunner().invoke(app, ["status", batch.id, "--config", str(cluster.config_dir)],
                               env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and batch.id in shown.output

    # a batch submitted with the CLI is readable over HTTP too, with its files
    cli_batch = cluster.submit([job_line("cli-1", "fast")])
    cli = _wait_ended(client, cli_batch)
    assert cli.status == "completed" and cli.request_counts.completed == 1
    assert json.loads(client.files.content(cli.output_file_id).text)["custom_id"] == "cli-1"
    assert client.batches.retrieve(cli_batch).output_file_id == cli.output_file_id

    assert client.files.delete(f.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_invalid_input_file_gives_a_failed_batch_with_line_numbers(env) -> None:
    cluster, gw, client = env
    content = (job_line("a", "fast") + "\n" + "{oops\n" + job_line("a", "nope") + "\n").encode()
    f = client.files.create(file=("bad.jsonl", content), purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    assert batch.status == "failed" and batch.failed_at
    lines = sorted({(e.line, e.code) for e in batch.errors.data})
    assert (2, "invalid_json_line") in lines and (3, "duplicate_custom_id") in lines
    assert (3, "unknown_tag") in lines
    assert client.batches.retrieve(batch.id).status == "failed"
    assert cluster.stats()["totals"]["received"] == 0


def test_cancel_list_and_client_mistakes(env) -> None:
    cluster, gw, client = env
    cluster.sim.set_latency(0.3)
    content = "\n".join(job_line(f"c{i}", "fast") for i in range(40)).encode()
    f = client.files.create(file=("c.jsonl", content), purpose="batch")
    ids = [client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                 completion_window="24h").id for _ in range(3)]
    cancelled = client.batches.cancel(ids[0])
    assert cancelled.status in ("cancelling", "cancelled") and cancelled.cancelling_at
    ended = _wait_ended(client, ids[0])
    assert ended.status == "cancelled"
    assert ended.request_counts.completed + ended.request_counts.failed == 40

    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert [b.id for b in page.iter_pages().__next__().data] == ids[::-1][:2]
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]   # the pager follows
    for i in ids[1:]:
        client.batches.cancel(i)

    url = gw.url + "/v1"
    r = httpx.post(f"{url}/batches", json={"input_file_id": f.id, "endpoint": "/v1/embeddings",
                                           "completion_window": "24h"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "endpoint"
    r = httpx.post(f"{url}/batches", json={"input_file_id": "file-x",
                                           "endpoint": "/v1/chat/completions",
                                           "completion_window": "24h"})
    assert r.status_code == 404
    r = httpx.post(f"{url}/files", files={"file": ("a.jsonl", b"{}")}, data={"purpose": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = httpx.post(f"{url}/files", data={"purpose": "batch"}, files={"other": ("a", b"1")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "other"
    r = httpx.post(f"{url}/files", data={"purpose": "batch"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_content_type"
    r = httpx.post(f"{url}/files", files={"purpose": (None, "batch")})   # multipart, no file
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    assert httpx.get(f"{url}/batches?limit=0").status_code == 400
    assert httpx.get(f"{url}/batches?after=batch_nope").json()["data"] == []
    assert httpx.post(f"{url}/batches/batch_nope/cancel").status_code == 404


def _status_json(cluster: Cluster, *args: str):
    from typer.testing import CliRunner

    from dispatcher.cli import app
    res = CliRunner().invoke(app, ["status", *args, "--json", "--config",
                                   str(cluster.config_dir)])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_status_json_and_http_show_the_same_batch_and_the_list_holds_every_batch(env) -> None:
    cluster, gw, client = env
    url = gw.url + "/v1"
    content = "\n".join(job_line(f"h{i}", "fast") for i in range(3)).encode()
    f = client.files.create(file=("h.jsonl", content), purpose="batch")
    http_id = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                    completion_window="24h", metadata={"run": "t2"}).id
    cli_id = cluster.submit([job_line("c0", "fast"), job_line("c1", "bulk")])
    bad = client.files.create(file=("bad.jsonl", b"{oops\n"), purpose="batch")
    refused_id = client.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions",
                                       completion_window="24h").id
    for batch_id in (http_id, cli_id):
        _wait_ended(client, batch_id)

    newest_first = [refused_id, cli_id, http_id]
    for batch_id in newest_first:
        over_http = httpx.get(f"{url}/batches/{batch_id}").json()
        shown = _status_json(cluster, batch_id)
        assert shown["dispatch"].pop("eta") is None       # the CLI's forecast: ended
        assert shown == over_http, batch_id                # field for field
    got = httpx.get(f"{url}/batches/{http_id}").json()
    assert got["status"] == "completed" and got["metadata"] == {"run": "t2"}
    assert got["input_file_id"] == f.id and got["output_file_id"]
    assert got["dispatch"] == {"simulated": True, "providers": {"p": 3}, "priority": "normal"}
    cli = httpx.get(f"{url}/batches/{cli_id}").json()
    assert cli["status"] == "completed" and cli["request_counts"]["completed"] == 2
    assert cli["output_file_id"] and cli["input_file_id"] == ""   # no file: the CLI's
    assert httpx.get(f"{url}/batches/{refused_id}").json()["errors"]["data"][0]["line"] == 1

    # GET /v1/batches: CLI batches and refused ones too, newest first, paged with `after`
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 1, **({"after": after} if after else {})}
        page = httpx.get(f"{url}/batches", params=params).json()
        seen += [b["id"] for b in page["data"]]
        pages += 1
        assert page["has_more"] == (len(seen) < 3), page
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == newest_first and pages == 3
    assert [b.id for b in client.batches.list(limit=2)] == newest_first   # the SDK's pager
    two = client.batches.list(limit=2)
    assert [b.id for b in two.data] == newest_first[:2] and two.has_more
    assert httpx.get(f"{url}/batches", params={"after": http_id}).json() == {
        "object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    # ... and `dispatch status` lists the same batches, the refused one included
    assert [o["id"] for o in _status_json(cluster)] == newest_first


def test_metadata_priority_is_checked_and_a_high_batch_goes_first(tmp_path: Path) -> None:
    from tests.test_priority import _follow, _one_slot, _submit

    with Cluster(_one_slot(tmp_path), tmp_path, latency=(0.05, 0.05)) as cluster, \
            GatewayServer(cluster.config_dir) as gw:
        client = openai.OpenAI(api_key="unused", base_url=f"{gw.url}/v1", max_retries=0)
        content = "\n".join(job_line(f"h{i}", "fast") for i in range(8)).encode()
        f = client.files.create(file=("h.jsonl", content), purpose="batch")
        create = {"input_file_id": f.id, "endpoint": "/v1/chat/completions",
                  "completion_window": "24h"}
        for bad, code in (({"priority": "urgent"}, "invalid_priority"),
                          ({"priority": "HIGH"}, "invalid_priority"),
                          ({"priority": 1}, "invalid_metadata")):
            r = httpx.post(f"{gw.url}/v1/batches", json={**create, "metadata": bad})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == code and r.json()["error"]["param"] == "metadata"
        assert httpx.get(f"{gw.url}/v1/batches").json()["data"] == []   # nothing created
        # A normal batch queued first, then a high one over HTTP, before any worker runs
        # (one slot: the normal batch's first job was handed out when it arrived).
        normal = _submit(cluster, "n", 8, "normal")
        high = client.batches.create(**create, metadata={"priority": "high", "who": "me"})
        assert cluster.batch(high.id)["priority"] == "high"
        assert high.metadata == {"priority": "high", "who": "me"}
        assert _status_json(cluster, high.id)["dispatch"]["priority"] == "high"
        cluster.start_worker("--all")
        seen = _follow(cluster, {"normal": normal, "high": high.id})
    high_done = next(s for s in seen if s["high"] == 8)
    assert high_done["normal"] <= 1, seen
    assert seen[-1] == {"normal": 8, "high": 8}
