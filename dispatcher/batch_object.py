"""A stored batch as an OpenAI batch object: the one mapping ``dispatch status --json`` and
the HTTP gateway's ``/v1/batches`` share (notes/formats.md).

Pure: it takes the job store's batch hash (``JobStore.batch``) and returns the object,
with ``request_counts`` as the job store counts jobs. ``metadata`` holds strings only (as
OpenAI's does); what is ours alone goes in an extra ``dispatch`` object (extra fields are
allowed): ``simulated`` and the jobs ended per provider.

    >>> batch_object({"id": "batch_1", "total": 2, "completed": 2, "failed": 0,
    ...               "status": "completed", "created": "100.5", "deadline": "200",
    ...               "ended": "150", "providers": {}})["status"]
    'completed'
"""

from __future__ import annotations

from typing import Any

ENDPOINT = "/v1/chat/completions"

#: Our batch statuses -> OpenAI's (validating, failed, in_progress, finalizing, completed,
#: expired, cancelling, cancelled).
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


def _ts(value: Any) -> int | None:
    """Unix seconds (OpenAI uses integers), or None."""
    try:
        return int(float(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def batch_status(info: dict[str, Any]) -> str:
    """OpenAI's status for a batch: every job ended means ``completed`` even if the stored
    status has not caught up yet (a cancelled batch stays ``cancelled``)."""
    stored = STATUS.get(str(info.get("status") or ""), "in_progress")
    ended = int(info.get("completed") or 0) + int(info.get("failed") or 0)
    total = int(info.get("total") or 0)
    if stored == "in_progress" and total and ended >= total:
        return "completed"
    return stored


def batch_object(info: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI batch object for one stored batch."""
    status = batch_status(info)
    created = _ts(info.get("created"))
    deadline = _ts(info.get("deadline"))
    ended = _ts(info.get("ended"))
    total = int(info.get("total") or 0)
    completed = int(info.get("completed") or 0)
    failed = int(info.get("failed") or 0)
    window = f"{max(0, (deadline or 0) - (created or 0)) // 3600}h" if deadline else "24h"
    meta = {"name": str(info["name"])} if info.get("name") else {}
    return {
        "id": info["id"],
        "object": "batch",
        "endpoint": ENDPOINT,
        "errors": None,
        "input_file_id": info.get("input_file_id") or None,
        "completion_window": window,
        "status": status,
        "output_file_id": info.get("output_file_id") or None,
        "error_file_id": info.get("error_file_id") or None,
        "created_at": created,
        "in_progress_at": created,
        "expires_at": deadline,
        "finalizing_at": ended if status == "completed" else None,
        "completed_at": ended if status == "completed" else None,
        "failed_at": ended if status == "failed" else None,
        "expired_at": ended if status == "expired" else None,
        "cancelling_at": None,
        "cancelled_at": ended if status == "cancelled" else None,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "metadata": meta,
        "dispatch": {"simulated": str(info.get("simulated")) == "1",
                     "providers": dict(sorted((info.get("providers") or {}).items()))},
    }
