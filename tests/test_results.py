"""OpenAI batch output lines with the dispatch block, and atomic results files."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.results import (
    DISPATCH_KEYS,
    ERROR_CODES,
    request_line_id,
    result_line,
    succeeded,
    write_results,
)

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "llama-3.1-8b-instant",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": USAGE,
}
SERVED = {"provider": "groq", "model": "llama-3.1-8b-instant", "attempts": 1,
          "latency_ms": 321, "usage": USAGE}


def test_success_line_shape() -> None:
    line = result_line("req-1", batch_id="b1", index=0, status_code=200, body=COMPLETION,
                       error=None, request_id="req_abc", dispatch=SERVED)
    assert line == {
        "id": request_line_id("b1", 0),
        "custom_id": "req-1",
        "response": {"status_code": 200, "request_id": "req_abc", "body": COMPLETION},
        "error": None,
        "dispatch": SERVED,
    }
    assert line["id"].startswith("batch_req_")
    assert "simulated" not in line["dispatch"]
    assert succeeded(line)
    json.dumps(line)  # serialisable as is


def test_upstream_error_is_a_response() -> None:
    err = {"error": {"message": "slow down", "type": "rate_limit", "param": None,
                     "code": "rate_limit_exceeded"}}
    line = result_line("req-2", batch_id="b1", index=1, status_code=429, body=err,
                       error=None, request_id=None, dispatch={**SERVED, "attempts": 3})
    assert line["response"] == {"status_code": 429, "request_id": None, "body": err}
    assert line["error"] is None
    assert line["dispatch"]["attempts"] == 3
    assert not succeeded(line)


def test_error_inside_http_200_is_not_a_success() -> None:
    body = {"error": {"message": "model overloaded", "type": "server_error", "param": None,
                      "code": None}}
    line = result_line("r", batch_id="b", index=0, status_code=200, body=body, error=None,
                       request_id=None, dispatch=SERVED)
    assert line["response"]["status_code"] == 200
    assert not succeeded(line)


def test_no_answer_line_shape() -> None:
    line = result_line("req-3", batch_id="b1", index=2, status_code=None, body=None,
                       error={"code": "expired", "message": "deadline passed"},
                       request_id=None, dispatch={})
    assert line["response"] is None
    assert line["error"] == {"code": "expired", "message": "deadline passed"}
    assert set(DISPATCH_KEYS) <= set(line["dispatch"])
    assert line["dispatch"]["provider"] is None and line["dispatch"]["attempts"] == 0
    assert not succeeded(line)


def test_error_message_defaults_to_code() -> None:
    line = result_line("r", batch_id="b", index=0, status_code=None, body=None,
                       error={"code": "cancelled"}, request_id=None, dispatch={})
    assert line["error"] == {"code": "cancelled", "message": "cancelled"}


@pytest.mark.parametrize("simulated, present", [(True, True), (False, False), (None, False)])
def test_simulated_only_when_true(simulated: bool | None, present: bool) -> None:
    line = result_line("r", batch_id="b", index=0, status_code=200, body=COMPLETION,
                       error=None, request_id=None,
                       dispatch={**SERVED, "simulated": simulated})
    assert ("simulated" in line["dispatch"]) is present
    if present:
        assert line["dispatch"]["simulated"] is True


def test_extra_dispatch_keys_kept() -> None:
    line = result_line("r", batch_id="b", index=0, status_code=200, body=COMPLETION,
                       error=None, request_id=None, dispatch={**SERVED, "tag": "fast"})
    assert line["dispatch"]["tag"] == "fast"


def test_documented_error_codes() -> None:
    assert {"no_target", "expired", "cancelled", "retries_exhausted",
            "rejected_by_all_targets"} <= set(ERROR_CODES)
    assert all(ERROR_CODES.values())


@pytest.mark.parametrize(
    "status_code, error",
    [(200, {"code": "expired"}), (None, None), (None, {"code": "made_up"})],
)
def test_inconsistent_arguments_refused(status_code: int | None, error: Any) -> None:
    with pytest.raises(ValueError):
        result_line("r", batch_id="b", index=0, status_code=status_code, body=None,
                    error=error, request_id=None, dispatch={})


def test_line_ids_stable_and_distinct() -> None:
    assert request_line_id("b1", 0) == request_line_id("b1", 0)
    ids = {request_line_id(b, i) for b in ("b1", "b2") for i in range(100)}
    assert len(ids) == 200


def _lines(n: int) -> list[dict[str, Any]]:
    return [
        result_line(f"r{i}", batch_id="b", index=i, status_code=200, body=COMPLETION,
                    error=None, request_id=None, dispatch=SERVED)
        for i in range(n)
    ]


def test_write_results_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "out.jsonl"
    lines = _lines(3)
    assert write_results(out, lines) == 3
    text = out.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert [json.loads(x) for x in text.splitlines()] == lines
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.jsonl"]


def test_write_results_escapes_unpaired_surrogates(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    write_results(out, [{"custom_id": "é\ud800"}])
    assert json.loads(out.read_text(encoding="utf-8")) == {"custom_id": "é\ud800"}


def test_write_results_is_atomic(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    write_results(out, _lines(2))
    out.chmod(0o600)
    before = out.read_bytes()

    def failing() -> Iterator[dict[str, Any]]:
        yield from _lines(1)
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_results(out, failing())
    assert out.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left

    write_results(out, _lines(1))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # an existing file keeps its mode
