"""The one OpenAI batch object builder (``dispatch status --json`` and ``/v1/batches``):
pure rules, checked over every combination of counts and stored statuses."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.batch_object import ENDED, batch_object, batch_status

OPENAI = {"validating", "failed", "in_progress", "finalizing", "completed", "expired",
          "cancelling", "cancelled"}
TIMES = {"completed": "completed_at", "failed": "failed_at", "expired": "expired_at",
         "cancelled": "cancelled_at"}
BASE = {"id": "batch_x", "created": "1000.7", "deadline": "87400.7", "ended": "1500",
        "providers": {"b": 1, "a": 2}, "simulated": "1", "name": "in.jsonl"}


@st.composite
def stored(draw):
    total = draw(st.integers(0, 50))
    completed = draw(st.integers(0, total))
    failed = draw(st.integers(0, total - completed))
    status = draw(st.sampled_from(["in_progress", "completed", "cancelled", "expired",
                                   "failed", "", "weird"]))
    return {**BASE, "total": total, "completed": completed, "failed": failed,
            "status": status}


records = st.fixed_dictionaries({}, optional={
    "finalizing": st.just("1"), "files_at": st.just("1600.2"),
    "output_file_id": st.just("file-o"), "error_file_id": st.just("file-e"),
    "cancelling_at": st.just("1200.9"), "completion_window": st.just("24h"),
    "metadata": st.just(json.dumps({"run": "n1"})), "input_file_id": st.just("file-in")})


@settings(max_examples=400, deadline=None)
@given(info=stored(), record=records)
def test_every_stored_batch_maps_to_one_consistent_openai_object(info, record):
    obj = batch_object(info, record)
    assert obj["status"] in OPENAI and obj["object"] == "batch"
    assert obj["status"] == batch_status(info, record)
    counts = obj["request_counts"]
    assert counts == {k: info[k] for k in ("total", "completed", "failed")}
    ended_all = info["total"] and info["completed"] + info["failed"] >= info["total"]
    # exactly the end time of the status it has is set
    for status, field in TIMES.items():
        assert (obj[field] is not None) == (obj["status"] == status), (status, obj)
    if obj["status"] == "completed":
        assert ended_all or info["status"] == "completed"
        assert obj["finalizing_at"] == obj["completed_at"] == 1500
    if info["status"] == "cancelled":  # never reported as done: cancelling, then cancelled
        assert obj["status"] == ("cancelled" if ended_all or not info["total"]
                                 else "cancelling")
        assert obj["cancelling_at"] == (1200 if "cancelling_at" in record else 1500)
    elif info["status"] in ("in_progress", "", "weird") and not ended_all:
        assert obj["status"] == "in_progress"
    if obj["status"] == "finalizing":  # another reader is writing the files
        assert "finalizing" in record and "files_at" not in record
    # what the gateway knows about the batch shows, whoever asks
    assert obj["output_file_id"] == record.get("output_file_id")
    assert obj["error_file_id"] == record.get("error_file_id")
    assert obj["input_file_id"] == record.get("input_file_id", "")
    assert obj["metadata"] == ({"run": "n1"} if "metadata" in record else {"name": "in.jsonl"})
    assert obj["completion_window"] == "24h" and obj["expires_at"] == 87400
    assert obj["dispatch"]["simulated"] is True
    assert list(obj["dispatch"]["providers"]) == ["a", "b"]
    json.dumps(obj)  # plain JSON


def test_a_batch_refused_at_validation_has_only_the_gateway_record():
    errors = {"object": "list", "data": [{"code": "invalid_json_line", "line": 2,
                                          "message": "x", "param": None}]}
    record = {"id": "batch_r", "errors": json.dumps(errors), "failed_at": "1700.5",
              "created_at": "1700.1", "input_file_id": "file-in", "completion_window": "24h",
              "endpoint": "/v1/chat/completions", "metadata": ""}
    obj = batch_object(None, record)
    assert obj["status"] == "failed" and obj["status"] in ENDED
    assert obj["errors"] == errors and obj["failed_at"] == 1700 and obj["created_at"] == 1700
    assert obj["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert obj["output_file_id"] is None and obj["metadata"] == {}


def test_a_batch_still_being_written_is_not_finished_and_priority_shows():
    info = {**BASE, "total": 0, "completed": 0, "failed": 0, "status": "in_progress",
            "priority": "high"}
    obj = batch_object(info)  # ``total`` comes last at creation: 0 is not "all ended"
    assert obj["status"] == "in_progress" and obj["completed_at"] is None
    assert obj["dispatch"]["priority"] == "high"
    cli = batch_object({**info, "deadline": "8200.7", "total": 1})
    assert cli["completion_window"] == "2h"  # a CLI batch's window is its deadline
