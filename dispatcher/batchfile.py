"""Read and validate a whole JSONL batch before anything is sent upstream.

A batch is refused as a whole when any line is bad, and every bad line is reported at
once (with its 1-based line number) so a user fixes the file in one pass.

Line format (OpenAI batch request lines, CONTRACT.md "Jobs in, results out")::

    {"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "fast", "messages": [...], "max_tokens": 256}}

- ``method`` and ``url`` may be omitted; when present they must be ``POST`` and
  ``/v1/chat/completions``.
- Routing: an optional top-level ``"tag"`` decides when present (``body.model`` is then
  replaced by each target's id); else ``body.model`` names a tag (``"fast"``) or one
  target (``"groq/llama-3.1-8b-instant"``, which pins the job to it).
- Allowed top-level keys: ``custom_id``, ``method``, ``url``, ``body``, ``tag`` and
  ``metadata`` (tolerated and ignored). Anything else is refused: a typo such as
  ``"tags"`` must not silently change the routing.
- Garbage is refused line by line, never a traceback: a line longer than
  ``settings.yaml`` ``jobs.max_line_bytes`` (skipped without being read into memory),
  invalid UTF-8, a NUL byte, JSON that is not JSON (``NaN``, an integer of thousands of
  digits, a number too large for a double), nesting deeper than
  :data:`~dispatcher.chat_body.MAX_DEPTH`, and a body of the wrong shape
  (:mod:`dispatcher.chat_body`, with the key path).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher import strict_json
from dispatcher.chat_body import body_problems, value_problem
from dispatcher.config import Config, split_target
from dispatcher.routing import Memo, eligibility
from workers.providers.adapters import refusal

CHAT_URL = "/v1/chat/completions"
ALLOWED_KEYS = frozenset({"custom_id", "method", "url", "body", "tag", "metadata"})
PINNED_TAG = "pinned"
"""``JobSpec.tag`` of a pinned job whose target is on no route (informational only)."""

PROBLEM_CODES = {
    "empty_file": "the file has no request lines",
    "too_many_tasks": "more lines than settings.yaml jobs.max_lines allows",
    "line_too_long": "the line is longer than settings.yaml jobs.max_line_bytes",
    "invalid_json_line": "the line is not a JSON object (not UTF-8, a NUL byte, NaN, an "
    "integer of more than 40 digits, a number beyond a double, nesting too deep)",
    "invalid_value": "a value no upstream can take (nesting deeper than 100 levels, an "
    "integer beyond 64 bits, a lone UTF-16 surrogate escape)",
    "unknown_key": "a top-level key other than custom_id, method, url, body, tag, metadata",
    "missing_custom_id": "custom_id is missing or not a non-empty string",
    "duplicate_custom_id": "custom_id already used on an earlier line",
    "method_mismatch": "method is not POST",
    "url_mismatch": "url is not /v1/chat/completions",
    "invalid_body": "body (or a field in it) has the wrong type; the key path says which",
    "no_messages": "body.messages is missing or empty",
    "stream_unsupported": "body.stream is true",
    "missing_model": "neither a top-level tag nor body.model says where to route",
    "unknown_tag": "the tag is not in routes.yaml",
    "unknown_target": "the pinned provider/model is not in providers.yaml",
    "no_vision_target": "image parts, but no vision-capable target",
    "too_large": "the prompt exceeds every target's context window",
    "max_tokens_too_large": "the job's cost exceeds a limit of every target",
    "no_target": "every target that could take the job is disabled (or paid)",
    "unsupported_param": "every target's provider refuses a parameter of the body (n > 1, "
    "logprobs on Groq, ...)",
}
"""Every problem code, with what it means (for the README and the HTTP API)."""


@dataclass(frozen=True)
class LineProblem:
    """One reason a line (``line`` 1-based; 0 for the whole file) was refused."""

    line: int
    code: str
    message: str
    missing_env: tuple[str, ...] = ()
    """For ``no_target``: the environment variables that would enable a target."""

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "batch"
        return f"{where}: {self.message}"


class BatchInvalid(Exception):
    """The batch (or job) is refused; ``problems`` lists every bad line, in line order."""

    def __init__(self, problems: list[LineProblem]):
        self.problems = problems
        super().__init__(format_problems(problems))

    def openai_errors(self) -> dict[str, Any]:
        """The OpenAI batch object's ``errors`` field (``{object: list, data: [...]}``)."""
        return {
            "object": "list",
            "data": [
                {"code": p.code, "message": p.message, "param": None, "line": p.line or None}
                for p in self.problems
            ],
        }


@dataclass
class JobSpec:
    """One validated job: where it may go (``targets``, most preferred first) and what."""

    line: int
    custom_id: str
    tag: str
    pinned: str | None
    body: dict[str, Any]
    targets: list[str]


def format_problems(problems: list[LineProblem], limit: int = 50) -> str:
    """One problem per line, at most ``limit`` of them, then how many were left out."""
    shown = [str(p) for p in problems[:limit]]
    if len(problems) > limit:
        shown.append(f"... and {len(problems) - limit} more problems ({len(problems)} in all)")
    return "\n".join(shown)


def _check_body(body: Any) -> list[tuple[str, str]]:
    """Structural problems of ``body`` as ``(code, message)`` (key path in the message)."""
    out: list[tuple[str, str]] = []
    if isinstance(body, dict):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            out.append(("no_messages", "body.messages is missing or empty"))
        if body.get("stream") is True:
            out.append(("stream_unsupported", "body.stream is true; streaming is not supported"))
    out.extend(("invalid_body", problem) for problem in body_problems(body))
    return out


class _Refused(Exception):
    """A line refused while resolving its route: ``code`` is a problem code."""

    def __init__(self, code: str, message: str):
        self.code, self.message = code, message
        super().__init__(message)


def _known_tags(cfg: Config) -> str:
    return ", ".join(sorted(cfg.routes))


def _resolve_route(obj: dict[str, Any], cfg: Config) -> tuple[str, str | None]:
    """``(tag, pinned)`` for the job, or raise ``_Refused(code, message)``."""
    if "tag" in obj:
        tag = obj["tag"]
        if not isinstance(tag, str) or tag not in cfg.routes:
            raise _Refused("unknown_tag", f"unknown tag {tag!r} (known: {_known_tags(cfg)})")
        return tag, None
    body = obj.get("body")
    model = body.get("model") if isinstance(body, dict) else None
    if model is None or model == "":
        raise _Refused(
            "missing_model",
            "body.model is missing: name a tag "
            f"({_known_tags(cfg)}) or a target 'provider/model-id', or add a top-level 'tag'",
        )
    if not isinstance(model, str):
        raise _Refused("invalid_body", f"body.model must be a string (got {model!r})")
    if model in cfg.routes:
        return model, None
    if "/" not in model:
        raise _Refused(
            "unknown_tag",
            f"body.model {model!r} is neither a tag ({_known_tags(cfg)}) nor a target "
            "'provider/model-id'",
        )
    try:
        split_target(model)
        target = cfg.target(model)
    except (KeyError, ValueError) as exc:
        provider = model.partition("/")[0]
        pc = cfg.providers.get(provider)
        hint = (
            f" (its models: {', '.join(m.id for m in pc.models)})"
            if pc
            else f" (providers: {', '.join(sorted(cfg.providers))})"
        )
        raise _Refused("unknown_target", f"{exc.args[0]}{hint}") from exc
    tag = next((t for t, refs in cfg.routes.items() if target.key in refs), PINNED_TAG)
    return tag, target.key


def _check_job(
    obj: Any, cfg: Config, line: int, memo: Memo | None = None
) -> tuple[JobSpec | None, list[LineProblem]]:
    """Validate one decoded line: the job, or every problem found on it."""
    if not isinstance(obj, dict):
        kind = "null" if obj is None else type(obj).__name__
        return None, [LineProblem(line, "invalid_json_line", f"expected a JSON object, got {kind}")]
    unusable = value_problem(obj)  # first: the checks below may walk any value
    if unusable:
        return None, [LineProblem(line, "invalid_value", unusable)]
    found: list[tuple[str, str]] = []
    unknown = sorted(set(obj) - ALLOWED_KEYS)
    if unknown:
        found.append(
            (
                "unknown_key",
                f"unknown top-level key(s) {', '.join(map(repr, unknown))} "
                f"(allowed: {', '.join(sorted(ALLOWED_KEYS))})",
            )
        )
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        found.append(("missing_custom_id", "custom_id is missing or not a non-empty string"))
    if "method" in obj and obj["method"] != "POST":
        found.append(("method_mismatch", f"method must be 'POST' (got {obj['method']!r})"))
    if "url" in obj and obj["url"] != CHAT_URL:
        found.append(("url_mismatch", f"url must be {CHAT_URL!r} (got {obj['url']!r})"))
    found.extend(_check_body(obj.get("body")))
    route: tuple[str, str | None] | None = None
    if "tag" in obj or isinstance(obj.get("body"), dict):
        try:
            route = _resolve_route(obj, cfg)
        except _Refused as r:
            found.append((r.code, r.message))
    if found or route is None:
        return None, [LineProblem(line, c, m) for c, m in found]

    tag, pinned = route
    body: dict[str, Any] = obj["body"]
    result = eligibility(body, None if pinned else tag, pinned, cfg, memo)
    if not result.targets:
        code, reason = result.code or "no_target", result.reason or "no target"
        return None, [LineProblem(line, code, reason, result.missing_env)]
    refusals = {t.key: refusal(t, body) for t in result.targets}
    takers = [key for key, why in refusals.items() if why is None]
    if not takers:  # decidable now: no request would be accepted by any target
        whys = sorted({f"{why} ({key})" for key, why in refusals.items()})
        return None, [LineProblem(line, "unsupported_param",
                                  f"no target can take this body: {'; '.join(whys)}")]
    return JobSpec(line, str(custom_id), tag, pinned, body, takers), []


def parse_job(obj: dict[str, Any], cfg: Config, line: int = 1,
              memo: Memo | None = None) -> JobSpec:
    """Validate one job (a single submission, an inline job of ``schedules.yaml``, an HTTP
    request); ``memo`` may be kept across calls while the configuration is unchanged."""
    spec, problems = _check_job(obj, cfg, line, memo)
    if problems or spec is None:
        raise BatchInvalid(problems)
    return spec


def decode_line(text: str) -> Any:
    """One JSON value, or ``_Refused("invalid_json_line", reason)``: strict JSON only
    (no ``NaN``/``Infinity``, no NUL byte), bounded numbers, nesting refused."""
    nul = text.find("\x00")
    if nul >= 0:
        raise _Refused("invalid_json_line", f"a NUL byte at column {nul + 1}")
    try:
        return strict_json.loads(text)
    except strict_json.JSONRefused as exc:
        raise _Refused("invalid_json_line", str(exc)) from None


@dataclass(frozen=True)
class _TooLong:
    """A line over the byte cap, read past (not kept): how many bytes it had."""

    size: int


_SKIP_CHUNK = 1 << 20


def _file_lines(path: str | os.PathLike[str], cap: int) -> Iterator[bytes | _TooLong]:
    """The file's lines, each read with at most ``cap`` + 2 bytes in memory: a longer one
    is skipped in chunks and yields ``_TooLong`` (so a 100 MB line costs 1 MB of RAM)."""
    with Path(path).open("rb") as fh:
        while raw := fh.readline(cap + 2):
            if raw.endswith(b"\n") or len(raw) < cap + 2:
                content = raw.rstrip(b"\r\n")
                yield raw if len(content) <= cap else _TooLong(len(content))
                continue
            size, tail = len(raw), raw[-64:]
            while chunk := fh.readline(_SKIP_CHUNK):
                size, tail = size + len(chunk), tail[-64:] + chunk
                if chunk.endswith(b"\n"):
                    break
            yield _TooLong(size - (len(tail) - len(tail.rstrip(b"\r\n"))))  # w/o CR LF


def _lines(source: Iterable[str] | str | os.PathLike[str],
           cap: int) -> Iterator[str | bytes | _TooLong]:
    if isinstance(source, str | os.PathLike):
        yield from _file_lines(source, cap)
        return
    for text in source:  # up to cap // 4 characters is at most cap bytes: no need to count
        size = len(text.encode("utf-8", "surrogatepass")) if len(text) > cap // 4 else 0
        yield _TooLong(size) if size > cap else text


def _text_of(n: int, raw: str | bytes | _TooLong, cap: int) -> str:
    """The line as text, or ``_Refused`` (too long, not UTF-8)."""
    if isinstance(raw, _TooLong):
        raise _Refused("line_too_long",
                       f"{raw.size:,} bytes, more than the {cap:,} of settings.yaml "
                       "jobs.max_line_bytes (skipped unread)")
    if isinstance(raw, str):
        return raw.removeprefix("\ufeff") if n == 1 else raw
    try:
        return raw.decode("utf-8-sig" if n == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise _Refused("invalid_json_line", f"not valid UTF-8 (byte {exc.start + 1})") from None


def parse_batch(source: Iterable[str] | str | os.PathLike[str], cfg: Config) -> list[JobSpec]:
    """Every job of a batch (a path, or an iterable of lines), or ``BatchInvalid``.

    A ``str`` is a path (use ``text.splitlines()`` for literal content). Blank lines are
    skipped but still counted, so line numbers match an editor's.
    """
    max_lines, cap = cfg.settings.jobs.max_lines, cfg.settings.jobs.max_line_bytes
    jobs: list[JobSpec] = []
    problems: list[LineProblem] = []
    first_seen: dict[str, int] = {}
    memo = Memo(cfg)
    count = 0
    for n, raw in enumerate(_lines(source, cap), start=1):
        try:
            text = _text_of(n, raw, cap)
        except _Refused as r:
            problems.append(LineProblem(n, r.code, r.message))
            count += 1
            continue
        if not text.strip():
            continue
        count += 1
        if count > max_lines:
            problems.append(
                LineProblem(
                    n,
                    "too_many_tasks",
                    f"more than {max_lines} request lines (settings.yaml jobs.max_lines); "
                    "split the batch",
                )
            )
            break
        try:
            obj = decode_line(text)
        except _Refused as r:
            problems.append(LineProblem(n, r.code, r.message))
            continue
        spec, line_problems = _check_job(obj, cfg, n, memo)
        cid = obj.get("custom_id") if isinstance(obj, dict) else None
        if isinstance(cid, str) and cid:
            if cid in first_seen:
                line_problems.insert(
                    0,
                    LineProblem(
                        n,
                        "duplicate_custom_id",
                        f"duplicate custom_id {cid!r} (first on line {first_seen[cid]})",
                    ),
                )
            else:
                first_seen[cid] = n
        if line_problems:
            problems.extend(line_problems)
        elif spec is not None:
            jobs.append(spec)
    if count == 0:
        problems.append(LineProblem(0, "empty_file", "the batch has no request lines"))
    if problems:
        raise BatchInvalid(problems)
    return jobs
