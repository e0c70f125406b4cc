"""``/v1/batches``: OpenAI's batch lifecycle on the job store ``dispatch run`` uses.

A valid input file becomes a job-store batch (:func:`dispatcher.batches.submit`), so
``dispatch status`` shows it under the same id. An invalid one becomes a batch in
``failed`` with ``errors.data[].line`` (nothing is queued). When the batch has ended, its
results are split into OpenAI's two files: the output file holds the lines answered 2xx,
the error file every other line; ``request_counts.failed`` counts the error file's lines.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from dispatcher.batchfile import CHAT_URL, BatchInvalid, parse_batch
from dispatcher.gateway import files
from dispatcher.gateway.errors import ApiError
from dispatcher.gateway.paging import page
from dispatcher.gateway.requests import json_object
from workers.priority import PRIORITIES

WINDOWS = {"24h": 86400.0}
"""Completion windows OpenAI accepts, in seconds (the batch's deadline)."""
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


def meta_key(ns: str, batch: str) -> str:
    return f"{ns}:gw:batch:{batch}"


def index_key(ns: str) -> str:
    return f"{ns}:gw:batches"


def _ts(value: Any) -> int | None:
    return int(float(value)) if value not in (None, "") else None


def jobstore_batch_to_openai(info: dict[str, Any] | None, meta: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI batch object from a job-store batch (``JobStore.batch``) and the gateway's
    record of how it was created (input file, window, metadata, cancel time, files).

    ``info`` None: a batch refused at validation (only the gateway record exists)."""
    obj: dict[str, Any] = {
        "id": meta["id"], "object": "batch", "endpoint": meta.get("endpoint", CHAT_URL),
        "errors": json.loads(meta["errors"]) if meta.get("errors") else None,
        "input_file_id": meta.get("input_file_id", ""),
        "completion_window": meta.get("completion_window", "24h"), "status": "failed",
        "output_file_id": meta.get("output_file_id") or None,
        "error_file_id": meta.get("error_file_id") or None,
        "created_at": _ts(meta.get("created_at")) or 0, "in_progress_at": None,
        "expires_at": None, "finalizing_at": None, "completed_at": None, "failed_at": None,
        "expired_at": None, "cancelling_at": _ts(meta.get("cancelling_at")),
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": json.loads(meta["metadata"]) if meta.get("metadata") else None,
    }
    if info is None:
        obj["failed_at"] = _ts(meta.get("failed_at"))
        return obj
    total, done, failed = info["total"], info["completed"], info["failed"]
    ended_all = done + failed >= total
    ended = _ts(info.get("ended"))
    obj.update(created_at=_ts(info.get("created")), in_progress_at=_ts(info.get("created")),
               expires_at=_ts(info.get("deadline")),
               request_counts={"total": total, "completed": done, "failed": failed})
    status = info.get("status", "in_progress")
    files_ready = bool(meta.get("files_at"))
    if status == "cancelled":
        obj["cancelling_at"] = obj["cancelling_at"] or ended or obj["created_at"]
        if ended_all and files_ready:
            obj.update(status="cancelled", cancelled_at=ended)
        else:
            obj["status"] = "cancelling"
    elif ended_all:
        obj["finalizing_at"] = ended
        if files_ready:
            obj.update(status="completed", completed_at=_ts(meta["files_at"]))
        else:
            obj["status"] = "finalizing"
    else:
        obj["status"] = "in_progress"
    return obj


def _split_results(batch: str) -> tuple[bytes, bytes]:
    """(output file, error file): 2xx lines, every other line, in input order."""
    from dispatcher.batches import result_lines

    ok, bad = io.BytesIO(), io.BytesIO()
    for line in result_lines(batch):
        status = (line.get("response") or {}).get("status_code")
        dest = ok if isinstance(status, int) and 200 <= status < 300 else bad
        dest.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    return ok.getvalue(), bad.getvalue()


def _finalize(gw, batch: str, meta: dict[str, Any]) -> None:
    """Write the output and error files of an ended batch, once."""
    key = meta_key(gw.namespace, batch)
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
    gw.r.hset(key, mapping=fields)
    meta.update(fields)


def load(gw, batch: str) -> dict[str, Any] | None:
    """The batch object (finishing its files first when it has just ended)."""
    meta = gw.r.hgetall(meta_key(gw.namespace, batch))
    if meta.get("errors"):
        return jobstore_batch_to_openai(None, meta)
    info = gw.rt.store.batch(batch)
    if info is None:
        return None
    if "id" not in meta:  # submitted by `dispatch run`/`submit`/a schedule: no input file
        meta = {"id": batch, "input_file_id": "", "endpoint": CHAT_URL,
                "completion_window": "24h", **meta}
    if info["completed"] + info["failed"] >= info["total"] and not meta.get("files_at"):
        _finalize(gw, batch, meta)
    return jobstore_batch_to_openai(info, meta)


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
    pipe.hset(meta_key(gw.namespace, batch), mapping=record)
    pipe.expire(meta_key(gw.namespace, batch), ttl)
    pipe.zadd(index_key(gw.namespace), {batch: now})
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
    gw.r.hsetnx(meta_key(gw.namespace, batch), "cancelling_at", time.time())
    cancel_batch(batch)
    return _or_404(load(gw, batch), batch)


async def cancel(request: Request) -> JSONResponse:
    gw = request.app.state.gw
    return JSONResponse(await gw.blocking(cancel_sync, gw,
                                                 request.path_params["batch_id"]))


async def list_batches(request: Request) -> JSONResponse:
    gw = request.app.state.gw

    def build() -> dict[str, Any]:
        return page(request, gw.r, index_key(gw.namespace), lambda b: load(gw, b))

    return JSONResponse(await gw.blocking(build))
