"""``/v1/files``: batch input files uploaded over HTTP and the batches' output/error files.

Stored in Redis next to the jobs (one hash per file, content included; a sorted set for
listing), kept ``jobs.retention_days``: every gateway replica sharing the Redis sees the
same files, and nothing lives on one machine's disk.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dispatcher.gateway.errors import ApiError
from dispatcher.gateway.paging import page

PURPOSES = frozenset({"batch"})
"""What may be uploaded (output files are written by the gateway itself)."""
_META = ("id", "filename", "bytes", "created_at", "purpose")


def file_key(ns: str, file_id: str) -> str:
    return f"{ns}:gw:file:{file_id}"


def index_key(ns: str) -> str:
    return f"{ns}:gw:files"


def file_object(meta: dict[str, Any]) -> dict[str, Any]:
    return {"id": meta["id"], "object": "file", "bytes": int(meta["bytes"]),
            "created_at": int(float(meta["created_at"])), "filename": meta["filename"],
            "purpose": meta["purpose"], "status": "processed", "expires_at": None,
            "status_details": None}


def store_file(gw, content: bytes, filename: str, purpose: str,
               file_id: str | None = None) -> dict[str, Any]:
    """Keep ``content`` as a file; returns its file object."""
    file_id = file_id or "file-" + uuid.uuid4().hex[:24]
    now = time.time()
    ttl = int(gw.config.settings.jobs.retention_days * 86400)
    key = file_key(gw.namespace, file_id)
    pipe = gw.bytes_redis().pipeline(transaction=False)
    pipe.hset(key, mapping={"id": file_id, "filename": filename, "bytes": len(content),
                            "created_at": now, "purpose": purpose, "content": content})
    pipe.expire(key, ttl)
    pipe.zadd(index_key(gw.namespace), {file_id: now})
    pipe.execute()
    return file_object({"id": file_id, "filename": filename, "bytes": len(content),
                        "created_at": now, "purpose": purpose})


def load_meta(gw, file_id: str) -> dict[str, Any] | None:
    values = gw.r.hmget(file_key(gw.namespace, file_id), *_META)
    if values[0] is None:
        return None
    return dict(zip(_META, values, strict=True))


def load_content(gw, file_id: str) -> bytes | None:
    return gw.bytes_redis().hget(file_key(gw.namespace, file_id), "content")


def _meta_or_404(gw, file_id: str) -> dict[str, Any]:
    meta = load_meta(gw, file_id)
    if meta is None:
        raise ApiError(404, f"no file {file_id!r}", "file_not_found", "file_id")
    return meta


async def upload(request: Request) -> JSONResponse:
    gw = request.app.state.gw
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(400, "upload a file as multipart/form-data with fields `file` and "
                       "`purpose`", "invalid_content_type")
    try:
        form = await request.form(max_files=1, max_fields=64)
    except ApiError:
        raise
    except Exception as exc:  # malformed multipart: the client's mistake
        raise ApiError(400, f"malformed multipart body: {exc}", "invalid_multipart") from None
    unknown = sorted(set(form.keys()) - {"file", "purpose"})
    if unknown:
        await form.close()
        raise ApiError(400, f"unknown form field(s) {unknown} (expected `file` and `purpose`)",
                       "unknown_field", unknown[0])
    purpose = form.get("purpose")
    upload_file = form.get("file")
    if not isinstance(purpose, str) or purpose not in PURPOSES:
        raise ApiError(400, f"purpose must be one of {sorted(PURPOSES)} (got {purpose!r})",
                       "invalid_purpose", "purpose")
    if not isinstance(upload_file, UploadFile):
        raise ApiError(400, "the `file` field (a file part) is missing", "missing_file", "file")
    content = await upload_file.read()
    await form.close()
    return JSONResponse(store_file(gw, content, upload_file.filename or "upload.jsonl", purpose))


async def list_files(request: Request) -> JSONResponse:
    gw = request.app.state.gw
    purpose = request.query_params.get("purpose")

    def load(file_id: str) -> dict[str, Any] | None:
        meta = load_meta(gw, file_id)
        if meta is None or (purpose and meta["purpose"] != purpose):
            return None
        return file_object(meta)

    return JSONResponse(page(request, gw.r, index_key(gw.namespace), load, default_limit=10000,
                             max_limit=10000))


async def get_file(request: Request) -> JSONResponse:
    gw = request.app.state.gw
    return JSONResponse(file_object(_meta_or_404(gw, request.path_params["file_id"])))


async def file_content(request: Request) -> Response:
    gw = request.app.state.gw
    file_id = request.path_params["file_id"]
    _meta_or_404(gw, file_id)
    content = load_content(gw, file_id) or b""
    return Response(content, media_type="application/octet-stream")


async def delete_file(request: Request) -> JSONResponse:
    gw = request.app.state.gw
    file_id = request.path_params["file_id"]
    _meta_or_404(gw, file_id)
    pipe = gw.r.pipeline(transaction=False)
    pipe.delete(file_key(gw.namespace, file_id))
    pipe.zrem(index_key(gw.namespace), file_id)
    pipe.execute()
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})
