"""OpenAI batch output lines, plus the ``dispatch`` block saying who served the job.

One shape for every outcome, so readers written for OpenAI's output files work as is:

- an upstream answer (success, or an upstream error, including one inside an HTTP 200
  body): ``response = {status_code, request_id, body}``, ``error = None``;
- no upstream answer: ``response = None``, ``error = {code, message}`` with ``code``
  from :data:`ERROR_CODES`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ERROR_CODES: Mapping[str, str] = {
    "no_target": "no enabled target can ever take the job (every provider that could is "
    "disabled, or the job no longer fits any target)",
    "expired": "the job's deadline (the batch's --deadline / completion window) passed "
    "before any target answered",
    "cancelled": "the batch was cancelled before the job got an answer",
    "retries_exhausted": "every attempt failed without an upstream answer (timeouts, "
    "connection errors) and the attempt budget (jobs.max_attempts) is spent",
    "rejected_by_all_targets": "every eligible target refused the job for a reason that "
    "retrying cannot fix (e.g. a model withdrawn upstream), so no answer will come",
    "internal_error": "the job crashed its task repeatedly (or ended without a stored "
    "result); the message says why, redacted",
}
"""The ``error.code`` of a job that ended without an upstream answer, and what each means."""

DISPATCH_KEYS = ("provider", "model", "attempts", "latency_ms", "usage")
"""Always present in the ``dispatch`` block (``None``/0 when no target answered)."""


def request_line_id(batch_id: str, index: int) -> str:
    """A stable ``batch_req_...`` id: rewriting the results gives the same ids."""
    digest = hashlib.sha256(f"{batch_id}:{index}".encode()).hexdigest()[:24]
    return f"batch_req_{digest}"


def result_line(
    custom_id: str,
    *,
    batch_id: str,
    index: int,
    status_code: int | None,
    body: dict[str, Any] | None,
    error: dict[str, Any] | None,
    request_id: str | None,
    dispatch: dict[str, Any],
) -> dict[str, Any]:
    """One output line. Give ``status_code`` (and ``body``) for an upstream answer, or
    ``error = {"code", "message"}`` for none; giving both or neither is a bug (ValueError).

    ``dispatch`` is normalised: the :data:`DISPATCH_KEYS` are always present and
    ``simulated`` appears only when true (so real results carry no such key).
    """
    if (error is None) == (status_code is None):
        raise ValueError("give exactly one of status_code (an upstream answer) or error")
    block: dict[str, Any] = dict.fromkeys(DISPATCH_KEYS)
    block["attempts"] = 0
    block.update({k: v for k, v in dispatch.items() if k != "simulated"})
    if dispatch.get("simulated"):
        block["simulated"] = True
    line: dict[str, Any] = {
        "id": request_line_id(batch_id, index),
        "custom_id": custom_id,
        "response": None,
        "error": None,
        "dispatch": block,
    }
    if error is not None:
        code = error.get("code")
        if code not in ERROR_CODES:
            raise ValueError(f"error code {code!r} is not one of {sorted(ERROR_CODES)}")
        line["error"] = {"code": code, "message": str(error.get("message") or code)}
    else:
        line["response"] = {"status_code": status_code, "request_id": request_id, "body": body}
    return line


def succeeded(line: Mapping[str, Any]) -> bool:
    """True for a 2xx answer with no ``error`` in its body (providers send some in 200s)."""
    response = line.get("response")
    if not response or line.get("error"):
        return False
    body = response.get("body")
    ok_status = 200 <= int(response.get("status_code") or 0) < 300
    return ok_status and not (isinstance(body, dict) and body.get("error"))


def output_problem(path: str | os.PathLike[str]) -> str | None:
    """Why :func:`write_results` could not write ``path`` (file, part and reason), or None.

    Checked BEFORE a long wait or a whole batch, so a typo in ``-o`` does not surface
    hours later. A missing parent directory is fine (it will be created) as long as its
    nearest existing ancestor is a writable directory. The check creates and removes a
    temporary file in that directory, so permissions, ACLs and read-only mounts all
    answer for themselves (``os.access`` is fooled by root and by ACLs).
    """
    target = Path(path)
    if target.is_dir():
        return f"{target}: is a directory; give a file name"
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{target}: {ancestor} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=ancestor)
    except OSError as exc:
        return f"{target}: cannot write in {ancestor}: {exc.strerror or exc}"
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
    return None


def write_results(path: str | os.PathLike[str], lines: Iterable[Mapping[str, Any]]) -> int:
    """Write JSONL atomically (temp file in the same directory, fsync, rename).

    A reader (or a crash) never sees half a results file. Returns the lines written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for line in lines:
                # ASCII escapes: a lone surrogate from upstream JSON cannot break the file.
                fh.write(json.dumps(line, separators=(",", ":")))
                fh.write("\n")
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes 0600; keep an existing file's mode, else a normal 0644.
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count
