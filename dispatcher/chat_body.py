"""The shape of a chat-completions request body, checked before anything is queued.

Pure functions, no I/O. A job whose body has the wrong shape would be refused by every
upstream (a 400 after spending quota) or, worse, break the code that estimates its cost;
so it is refused up front with the key path and the reason, e.g.
``body.messages[0].tool_calls: must be a list of objects (got int)``.

The check is deliberately lenient where providers differ: unknown body keys pass through
(provider extensions such as ``top_k``), unknown content part types pass, ``null`` means
"not given" for every optional field. Two generic rules cover every value of a job:

- at most :data:`MAX_DEPTH` levels of nesting (deeper JSON is refused, never recursed);
- integers fit in 64 bits, numbers are finite, strings are valid Unicode (no lone UTF-16
  surrogate from a ``\\ud800`` escape: an upstream could not even encode it).

    >>> body_problems({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
    []
    >>> body_problems({"messages": [{"role": "assistant", "tool_calls": 5}]})
    ['body.messages[0].tool_calls: must be a list of objects (got int)']
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from dispatcher.strict_json import MAX_INT_DIGITS

MAX_DEPTH = 100
"""Most levels of nesting in one job (a JSON schema in ``response_format`` or ``tools``
needs a few dozen at most; Python's own recursion limit is 1,000)."""

INT64 = 2**63
HUGE = 10**MAX_INT_DIGITS
"""Integers in fields we pass through unread: as many digits as the batch parser allows."""
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MISPLACED = {"tool_calls", "tool_call_id", "role", "content"}
"""Message fields found at the top of a body: a mistake every upstream would refuse."""

Check = Callable[[Any, str], str | None]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _string(v: Any, path: str) -> str | None:
    return None if isinstance(v, str) else f"{path}: must be a string (got {_kind(v)})"


def _boolean(v: Any, path: str) -> str | None:
    return None if isinstance(v, bool) else f"{path}: must be true or false (got {_kind(v)})"


def _number(v: Any, path: str) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return f"{path}: must be a number (got {_kind(v)})"
    return None


def _object(v: Any, path: str) -> str | None:
    return None if isinstance(v, dict) else f"{path}: must be an object (got {_kind(v)})"


def _int_in(low: int, high: int) -> Check:
    def check(v: Any, path: str) -> str | None:
        if not _is_int(v) or not low <= v <= high:
            got = v if _is_int(v) else _kind(v)
            return f"{path}: must be an integer from {low} to {high} (got {got})"
        return None
    return check


def _one_of(*checks: Check) -> Check:
    """Passes when any check passes. Else the problem found deepest inside the value
    (``content[2].text`` says more than ``content``), or every wanted type at once."""
    def check(v: Any, path: str) -> str | None:
        problems = [c(v, path) for c in checks]
        if None in problems:
            return None
        here = f"{path}: must be "
        deeper = [p for p in problems if p and not p.startswith(here)]
        if deeper:
            return deeper[0]
        wants = [(p or "").removeprefix(here).split(" (got ")[0] for p in problems]
        return f"{here}{' or '.join(wants)} (got {_kind(v)})"
    return check


def _list_of(item: Check, what: str) -> Check:
    def check(v: Any, path: str) -> str | None:
        if not isinstance(v, list):
            return f"{path}: must be a list of {what} (got {_kind(v)})"
        for i, x in enumerate(v):
            problem = item(x, f"{path}[{i}]")
            if problem:
                return problem
        return None
    return check


def _fields(required: dict[str, Check], optional: dict[str, Check]) -> Check:
    """An object with these fields (others pass through); ``null`` optional = absent."""
    def check(v: Any, path: str) -> str | None:
        if not isinstance(v, dict):
            return f"{path}: must be an object (got {_kind(v)})"
        for name, c in required.items():
            if name not in v:
                return f"{path}.{name}: is missing"
            problem = c(v[name], f"{path}.{name}")
            if problem:
                return problem
        for name, c in optional.items():
            if v.get(name) is not None:
                problem = c(v[name], f"{path}.{name}")
                if problem:
                    return problem
        return None
    return check


def _strings(v: Any, path: str) -> str | None:
    return _list_of(_string, "strings")(v, path)


_function_call = _fields({"name": _string, "arguments": _string}, {})
_tool_call = _fields({"function": _function_call}, {"id": _string, "type": _string})
_tool = _fields({"type": _string}, {"function": _fields({"name": _string}, {
    "description": _string, "parameters": _object})})
_image_url = _one_of(_fields({"url": _string}, {"detail": _string}), _string)


def _part(v: Any, path: str) -> str | None:
    """A content part: ``{"type": "text", "text": ...}``, ``{"type": "image_url",
    "image_url": {"url": ...}}``, or another type (passed through)."""
    problem = _fields({"type": _string}, {})(v, path)
    if problem:
        return problem
    if v["type"] == "text":
        return _fields({"text": _string}, {})(v, path)
    if v["type"] == "image_url":
        return _fields({"image_url": _image_url}, {})(v, path)
    return None


def _role(v: Any, path: str) -> str | None:
    if not isinstance(v, str) or v not in ROLES:
        got = repr(v) if isinstance(v, str) else _kind(v)
        return f"{path}: must be one of {', '.join(sorted(ROLES))} (got {got})"
    return None


_message = _fields({"role": _role}, {
    "content": _one_of(_string, _list_of(_part, "content parts")),
    "name": _string,
    "tool_calls": _list_of(_tool_call, "objects"),
    "tool_call_id": _string,
})

BODY_FIELDS: dict[str, Check] = {
    "model": _string,
    "max_tokens": _int_in(1, 2**31 - 1),
    "max_completion_tokens": _int_in(1, 2**31 - 1),
    "n": _int_in(1, 128),
    "temperature": _number,
    "top_p": _number,
    "frequency_penalty": _number,
    "presence_penalty": _number,
    "seed": _int_in(-INT64, INT64 - 1),
    "stop": _one_of(_string, _strings),
    "stream": _boolean,
    "tools": _list_of(_tool, "objects"),
    "tool_choice": _one_of(_string, _object),
    "parallel_tool_calls": _boolean,
    "response_format": _object,
    "logprobs": _boolean,
    "top_logprobs": _int_in(0, 20),
    "logit_bias": _object,
    "user": _string,
}
"""The OpenAI request fields whose type is checked (``null`` counts as not given)."""


def value_problem(value: Any, path: str = "", max_depth: int = MAX_DEPTH) -> str | None:
    """The first value anywhere in ``value`` that no upstream could take, or None.

    Iterative (an explicit stack), so even a structure nested far beyond ``max_depth``
    costs no recursion. A quick pass first; key paths are only built for a bad value.
    """
    if _clean(value, max_depth):
        return None
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        v, where, depth = stack.pop()
        if isinstance(v, dict | list):
            if depth >= max_depth:
                return f"{_short(where)}: nested more than {max_depth} levels deep"
            items = v.items() if isinstance(v, dict) else enumerate(v)
            for k, x in items:
                if not isinstance(k, str | int):
                    return f"{_short(where)}: a key that is not a string ({_kind(k)})"
                if isinstance(k, str):
                    problem = _text_problem(k, f"{_short(where)} (a key)")
                    if problem:
                        return problem
                    sub = f"{where}.{k}" if where else k
                else:
                    sub = f"{where}[{k}]"
                stack.append((x, sub, depth + 1))
        elif isinstance(v, str):
            problem = _text_problem(v, _short(where))
            if problem:
                return problem
        elif _is_int(v) and not -HUGE < v < HUGE:
            return f"{_short(where)}: integer of more than {MAX_INT_DIGITS} digits"
        elif isinstance(v, float) and not math.isfinite(v):
            return f"{_short(where)}: {v} is not a finite number"
        elif not isinstance(v, int | float | bool) and v is not None:
            return f"{_short(where)}: a {_kind(v)} is not a JSON value"
    return None


def _clean(value: Any, max_depth: int) -> bool:
    """True when :func:`value_problem` has nothing to say (the fast path: no key paths)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        t = type(v)
        if t is str:
            if not v.isascii() and _text_problem(v, ""):
                return False
        elif t is dict or t is list:
            if depth >= max_depth:
                return False
            if t is dict:
                for k in v:
                    if type(k) is not str or (not k.isascii() and _text_problem(k, "")):
                        return False
                stack.extend((x, depth + 1) for x in v.values())
            else:
                stack.extend((x, depth + 1) for x in v)
        elif t is int:
            if not -HUGE < v < HUGE:
                return False
        elif t is float:
            if not math.isfinite(v):
                return False
        elif v is not None and t is not bool:
            return False
    return True


def _short(path: str, most: int = 120) -> str:
    """A key path fit for an error line (deep nesting or a huge key makes it endless)."""
    if not path:
        return "the line"
    return path if len(path) <= most else f"{path[:most]}... ({len(path):,} characters)"


def _text_problem(s: str, where: str) -> str | None:
    if s.isascii():
        return None
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"{where}: a lone UTF-16 surrogate escape at character "
                f"{exc.start} (not valid Unicode)")
    return None


def body_problems(body: Any) -> list[str]:
    """Every shape problem of a request body (one per field), as ``path: reason``."""
    if not isinstance(body, dict):
        return [f"body: must be a JSON object (got {'missing' if body is None else _kind(body)})"]
    out = []
    for name in sorted(MISPLACED & set(body)):
        out.append(f"body.{name}: belongs in a message (body.messages[i].{name}), "
                   "not at the top of the body")
    messages = body.get("messages")
    if isinstance(messages, list):
        problem = _list_of(_message, "message objects")(messages, "body.messages")
        if problem:
            out.append(problem)
    for name, check in BODY_FIELDS.items():
        if body.get(name) is not None:
            problem = check(body[name], f"body.{name}")
            if problem:
                out.append(problem)
    return out
