"""A stored batch as an OpenAI batch object: the one mapping ``dispatch status --json`` and
the HTTP gateway's ``/v1/batches`` share (notes/formats.md), so both print the same JSON.

A batch has up to two records: the job store's hash (``JobStore.batch``: counts, status,
times; every batch not refused at validation has one) and the gateway's record
(:func:`record_key`: how ``POST /v1/batches`` created it — input file, window, the user's
metadata, validation errors, cancel time — and the output/error files once written). A
batch submitted with the CLI has a gateway record only after its files were written.

:func:`batch_object` is pure; :func:`load` reads both records (Redis) and calls it.
``metadata`` holds strings only (as OpenAI's does): the user's metadata, else the batch's
name; what is ours alone goes in an extra ``dispatch`` object (extra fields are allowed):
``simulated``, the jobs ended per provider and the priority.

    >>> batch_object({"id": "batch_1", "total": 2, "completed": 2, "failed": 0,
    ...               "status": "completed", "created": "100.5", "deadline": "200",
    ...               "ended": "150", "providers": {}})["status"]
    'completed'
"""

from __future__ import annotations

import json
from typing import Any

ENDPOINT = "/v1/chat/completions"

#: Our stored batch statuses -> OpenAI's (validating, failed, in_progress, finalizing,
#: completed, expired, cancelling, cancelled).
STATUS = {
    "in_progress": "in_progress",
    "completed": "completed",
    "cancelled": "cancelled",
    "cancelling": "cancelling",
    "expired": "expired",
    "failed": "failed",
    "validating": "validating",
    "finalizing": "finalizing",
}
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
"""OpenAI statuses after which nothing changes."""


def record_key(ns: str, batch: str) -> str:
    """The gateway's record of a batch (a hash; see the module docstring)."""
    return f"{ns}:gw:batch:{batch}"


def _ts(value: Any) -> int | None:
    """Unix seconds (OpenAI uses integers), or None."""
    try:
        return int(float(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _all_ended(info: dict[str, Any]) -> bool:
    """Every job ended (``total`` is written last at creation, so 0 means not yet known)."""
    total = int(info.get("total") or 0)
    return bool(total) and int(info.get("completed") or 0) + int(info.get("failed") or 0) >= total


def batch_status(info: dict[str, Any], record: dict[str, Any] | None = None) -> str:
    """OpenAI's status for a batch.

    Every job ended means ``completed`` even if the stored status has not caught up yet —
    ``finalizing`` only while another reader is writing the output files; a cancelled batch
    is ``cancelling`` until its running calls have ended, then ``cancelled``."""
    record = record or {}
    stored = STATUS.get(str(info.get("status") or ""), "in_progress")
    ended = _all_ended(info)
    if stored == "cancelled":
        return "cancelled" if ended or not int(info.get("total") or 0) else "cancelling"
    if stored in ("in_progress", "completed", "finalizing") and (ended or stored == "completed"):
        return "finalizing" if record.get("finalizing") and not record.get("files_at") \
            else "completed"
    return stored


def _metadata(info: dict[str, Any], record: dict[str, Any]) -> dict[str, str]:
    if record.get("metadata"):
        return json.loads(record["metadata"])
    return {"name": str(info["name"])} if info.get("name") else {}


def _refused(record: dict[str, Any]) -> dict[str, Any]:
    """A batch refused at validation: only the gateway's record exists, nothing was queued."""
    created = _ts(record.get("created_at"))
    return {**_skeleton(record["id"], record), "status": "failed",
            "created_at": created, "failed_at": _ts(record.get("failed_at")),
            "metadata": json.loads(record["metadata"]) if record.get("metadata") else {},
            "dispatch": {"simulated": False, "providers": {}}}


def _skeleton(batch: str, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": batch, "object": "batch", "endpoint": record.get("endpoint") or ENDPOINT,
        "errors": json.loads(record["errors"]) if record.get("errors") else None,
        # a string, as OpenAI's type has it: empty for a batch no file was uploaded for
        "input_file_id": record.get("input_file_id") or "",
        "completion_window": record.get("completion_window") or "24h", "status": "failed",
        "output_file_id": record.get("output_file_id") or None,
        "error_file_id": record.get("error_file_id") or None,
        "created_at": None, "in_progress_at": None, "expires_at": None,
        "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None,
        "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": {},
    }


def batch_object(info: dict[str, Any] | None,
                 record: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAI batch object for one stored batch.

    ``info``: the job store's hash (None: refused at validation, ``record`` then holds the
    errors); ``record``: the gateway's record, if any."""
    record = record or {}
    if info is None:
        return _refused(record)
    status = batch_status(info, record)
    created = _ts(info.get("created"))
    deadline = _ts(info.get("deadline"))
    ended = _ts(info.get("ended"))
    obj = _skeleton(info["id"], record)
    if not record.get("completion_window") and deadline:
        obj["completion_window"] = f"{max(0, deadline - (created or 0)) // 3600}h"
    cancelling = None
    if status in ("cancelling", "cancelled"):
        cancelling = _ts(record.get("cancelling_at")) or ended or created
    finalizing = ended if status in ("finalizing", "completed") else None
    obj.update({
        "status": status,
        "created_at": created,
        "in_progress_at": created,
        "expires_at": deadline,
        "finalizing_at": finalizing,
        "completed_at": ended if status == "completed" else None,
        "failed_at": ended if status == "failed" else None,
        "expired_at": ended if status == "expired" else None,
        "cancelling_at": cancelling,
        "cancelled_at": ended if status == "cancelled" else None,
        "request_counts": {"total": int(info.get("total") or 0),
                           "completed": int(info.get("completed") or 0),
                           "failed": int(info.get("failed") or 0)},
        "metadata": _metadata(info, record),
        "dispatch": {"simulated": str(info.get("simulated")) == "1",
                     "providers": dict(sorted((info.get("providers") or {}).items()))},
    })
    if info.get("priority"):
        obj["dispatch"]["priority"] = info["priority"]
    return obj


def load(store: Any, r: Any, ns: str, batch: str) -> dict[str, Any] | None:
    """The batch object of ``batch`` from the job store and the gateway's record; None when
    neither exists (never was, or past ``jobs.retention_days``)."""
    record = r.hgetall(record_key(ns, batch))
    if record.get("errors"):
        return batch_object(None, record)
    info = store.batch(batch)
    return None if info is None else batch_object(info, record)
