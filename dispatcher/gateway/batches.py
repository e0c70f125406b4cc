"""``/v1/batches``: OpenAI's batch lifecycle on the job store ``dispatch run`` uses.

A valid input file becomes a job-store batch (:func:`dispatcher.batches.submit`), so
``dispatch status`` shows it under the same id. An invalid one becomes a batch in
``failed`` with ``errors.data[].line`` (nothing is queued). When the batch has ended, its
results are split into OpenAI's two files: the output file holds the lines answered 2xx,
the error file every other line; ``request_counts.failed`` counts the error file's lines.
The first reader of an ended batch writes them (a batch submitted with the CLI too).

The batch object itself is :func:`dispatcher.batch_object.batch_object`, the one
``dispatch status --json`` prints; the list is the job store's index of every batch.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from dispatcher import batch_object
from dispatcher.batch_object import ENDED, record_key
from dispatcher.batchfile import CHAT_URL, BatchInvalid, parse_batch
from dispatcher.gateway import files
from dispatcher.gateway.errors import ApiError
from dispatcher.gateway.paging import page
from dispatcher.gateway.requests import json_object
from workers.priority import PRIORITIES

WINDOWS = {"24h": 86400.0}
"""Completion windows OpenAI accepts, in seconds (the batch's deadline)."""


def index_key(store) -> str:
    """Every batch, newest first: the job store's own index (``dispatch status`` lists it),
    which batches refused at validation join too, so one list holds them all."""
    return f"{store.ns}:batches"


def _split_results(batch: str) -> tuple[bytes, bytes]:
    """(output file, error file): 2xx lines, every other line, in input order."""
    from dispatcher.batches import result_lines

    ok, bad = io.BytesIO(), io.BytesIO()
    for line in result_lines(batch):
        status = (line.get("response") or {}).get("status_code")
        dest = ok if isinstance(status, int) and 200 <= status < 300 else bad
        dest.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    return ok.getvalue(), bad.getvalue()


def _finalize(gw, batch: str) -> None:
    """Write the output and error files of an ended batch, once."""
    key = record_key(gw.namespace, batch)
    if not gw.r.hsetnx(key, "finalizing", "1"):
        return
    out, err = _split_results(batch)
    fields: dict[str, Any] = {"files_at": time.time()}
    if out:
        fields["output_file_id"] = files.store_file(
            gw, out, f"{batch}_output.jsonl", "batch_output", f"file-{batch}-output")["id"]
    if err:
        fields["error_file_id"] = files.store_file(
            gw, err, f"{batch}_error.jsonl", "batch_output", f"file-{batch}-error")["id"]
    pipe = gw.r.pipeline(transaction=False)
    pipe.hset(key, mapping=fields)
    pipe.expire(key, int(gw.config.settings.jobs.retention_days * 86400))  # as the files
    pipe.execute()


def load(gw, batch: str) -> dict[str, Any] | None:
    """The batch object (writing its output and error files first when it has just ended),
    the same one ``dispatch status --json`` prints."""
    obj = batch_object.load(gw.rt.store, gw.r, gw.namespace, batch)
    if obj is not None and obj["status"] in ENDED and not obj["errors"] and \
            not gw.r.hexists(record_key(gw.namespace, batch), "files_at"):
        _finalize(gw, batch)
        obj = batch_object.load(gw.rt.store, gw.r, gw.namespace, batch)
    return obj


def _check_metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in value.items()):
        raise ApiError(400, "metadata: at most 16 string keys (<= 64 chars) with string "
                       "values (<= 512 chars)", "invalid_metadata", "metadata")
    return value


def create_sync(gw, body: dict[str, Any]) -> dict[str, Any]:
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise ApiError(400, "input_file_id is required", "missing_input_file", "input_file_id")
    if body.get("endpoint") != CHAT_URL:
        raise ApiError(400, f"endpoint must be {CHAT_URL!r} (got {body.get('endpoint')!r})",
                       "invalid_endpoint", "endpoint")
    window = body.get("completion_window")
    if not isinstance(window, str) or window not in WINDOWS:
        raise ApiError(400, f"completion_window must be one of {sorted(WINDOWS)} "
                       f"(got {window!r})", "invalid_completion_window", "completion_window")
    metadata = _check_metadata(body.get("metadata"))
    priority = (metadata or {}).get("priority", "normal")
    if priority not in PRIORITIES:
        raise ApiError(400, f"metadata.priority must be one of {', '.join(PRIORITIES)} "
                       f"(got {priority!r})", "invalid_priority", "metadata")
    meta = files.load_meta(gw, file_id)
    if meta is None:
        raise ApiError(404, f"no file {file_id!r}", "file_not_found", "input_file_id")
    if meta["purpose"] != "batch":
        raise ApiError(400, f"file {file_id!r} has purpose {meta['purpose']!r}, not 'batch'",
                       "invalid_input_file", "input_file_id")
    content = files.load_content(gw, file_id) or b""
    now = time.time()
    record: dict[str, Any] = {"input_file_id": file_id, "endpoint": CHAT_URL,
                              "completion_window": window, "created_at": now,
                              "metadata": json.dumps(metadata) if metadata else ""}
    try:
        specs = parse_batch(io.BytesIO(content), gw.config)
    except BatchInvalid as exc:
        batch = "batch_" + uuid.uuid4().hex[:20]
        record.update(errors=json.dumps(exc.openai_errors()), failed_at=now)
    else:
        from dispatcher.batches import submit

        batch = submit(specs, simulated=gw.simulate, deadline_s=WINDOWS[window],
                       name=f"{meta['filename']} ({file_id})", priority=priority)
    record["id"] = batch
    ttl = int(gw.config.settings.jobs.retention_days * 86400 + WINDOWS[window])
    pipe = gw.r.pipeline(transaction=False)
    pipe.hset(record_key(gw.namespace, batch), mapping=record)
    pipe.expire(record_key(gw.namespace, batch), ttl)
    if "errors" in record:  # `submit` indexed the others
        pipe.zadd(index_key(gw.rt.store), {batch: now})
    pipe.execute()
    obj = load(gw, batch)
    assert obj is not None
    return obj


async def create(request: Request) -> JSONResponse:
    gw = request.app.state.gw
    body = await json_object(request)
    return JSONResponse(await gw.blocking(create_sync, gw, body))


def _or_404(obj: dict[str, Any] | None, batch: str) -> dict[str, Any]:
    if obj is None:
        raise ApiError(404, f"no batch {batch!r}", "batch_not_found", "batch_id")
    return obj


async def get(request: Request) -> JSONResponse:
    gw = request.app.state.gw
    batch = request.path_params["batch_id"]
    return JSONResponse(_or_404(await gw.blocking(load, gw, batch), batch))


def cancel_sync(gw, batch: str) -> dict[str, Any]:
    from dispatcher.batches import cancel as cancel_batch

    obj = _or_404(load(gw, batch), batch)
    if obj["status"] in ENDED:
        if obj["status"] == "cancelled":
            return obj
        raise ApiError(409, f"batch {batch!r} is already {obj['status']}", "batch_ended",
                       "batch_id", type_="invalid_request_error")
    gw.r.hsetnx(record_key(gw.namespace, batch), "cancelling_at", time.time())
    cancel_batch(batch)
    return _or_404(load(gw, batch), batch)


async def cancel(request: Request) -> JSONResponse:
    gw = request.app.state.gw
    return JSONResponse(await gw.blocking(cancel_sync, gw,
                                                 request.path_params["batch_id"]))


async def list_batches(request: Request) -> JSONResponse:
    gw = request.app.state.gw

    def build() -> dict[str, Any]:
        return page(request, gw.r, index_key(gw.rt.store), lambda b: load(gw, b))

    return JSONResponse(await gw.blocking(build))
