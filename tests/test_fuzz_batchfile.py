"""Property tests of the batch parser: any input gives jobs or line-numbered problems.

Whatever the bytes, ``parse_batch`` returns validated jobs or raises ``BatchInvalid``
whose every problem names a line of the file and a documented code — never another
exception. And an ACCEPTED job can be processed: its body encodes as strict UTF-8 JSON
(what the HTTP client sends), its cost can be estimated and every target's adapter can
prepare it. Fixed seeds (``derandomize``), no example database, no deadline: the same
examples on every run, so these tests cannot flake.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dispatcher.batchfile import PROBLEM_CODES, BatchInvalid, JobSpec, parse_batch
from dispatcher.chat_body import BODY_FIELDS, ROLES
from dispatcher.config import Config, load_config
from tests.conftest import SHIPPED_CONFIG
from tests.strategies import FUZZ, json_like
from workers.providers.adapters import adapter_for
from workers.quota.costs import estimate_cost


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(SHIPPED_CONFIG, simulate=True)


json_values = json_like(["", "fast", "\ud800", "\x00"])


def mostly(valid: st.SearchStrategy[Any], junk: st.SearchStrategy[Any] = json_values,
           one_in: int = 8) -> st.SearchStrategy[Any]:
    """``valid``, but ``junk`` once in ``one_in`` draws (garbage in random places, while
    most examples get far enough to reach routing, costing and the adapters)."""
    return st.sampled_from(range(one_in)).flatmap(lambda i: junk if i == one_in - 1 else valid)


short_text = st.text(max_size=40)
parts = st.fixed_dictionaries({"type": mostly(st.sampled_from(["text", "image_url", "file"]))},
                              optional={"text": mostly(short_text),
                                        "image_url": mostly(st.fixed_dictionaries(
                                            {"url": mostly(st.text(max_size=10))}))})
message = st.fixed_dictionaries(
    {"role": mostly(st.sampled_from(sorted(ROLES)))},
    optional={"content": mostly(short_text | st.lists(parts, max_size=3)),
              "tool_calls": json_values, "name": mostly(short_text),
              "tool_call_id": json_values})
messages = mostly(st.lists(message, min_size=1, max_size=3))
field_values = (st.integers(-5, 5000) | st.floats(0, 2) | st.booleans() | short_text
                | st.lists(short_text, max_size=2) | st.just({}))


@st.composite
def request_objects(draw: st.DrawFn, cfg: Config) -> Any:
    """Mostly-plausible request lines with garbage in random places."""
    routes = sorted(cfg.routes) + [t.key for t in cfg.targets()][:6] + ["nope", "x/y"]
    body: Any = {"model": draw(mostly(st.sampled_from(routes))), "messages": draw(messages)}
    for name in draw(st.lists(st.sampled_from(sorted(BODY_FIELDS) + ["tool_calls"]),
                              max_size=3)):
        body[name] = draw(mostly(field_values, one_in=3))
    obj: dict[str, Any] = {"custom_id": draw(mostly(st.text("abc", min_size=1, max_size=3))),
                           "body": draw(mostly(st.just(body), one_in=12))}
    for key in draw(mostly(st.just([]), st.lists(st.sampled_from(
            ["tag", "method", "url", "metadata", "extra"]), max_size=2))):
        obj[key] = draw(st.sampled_from(routes + ["POST", "/v1/chat/completions"])
                        | json_values)
    return draw(mostly(st.just(obj), one_in=20))


def _check(outcome: list[JobSpec] | BatchInvalid, lines: int, cfg: Config) -> None:
    """The property: documented problems on real lines, or jobs that can be processed."""
    if isinstance(outcome, BatchInvalid):
        assert outcome.problems
        for p in outcome.problems:
            assert p.code in PROBLEM_CODES, p
            assert 0 <= p.line <= lines and (p.line or p.code == "empty_file"), p
            assert p.message and str(p)
        return
    for job in outcome:
        assert job.targets and 1 <= job.line <= lines
        json.dumps(job.body, allow_nan=False, ensure_ascii=False).encode("utf-8")
        for ref in job.targets:
            target = cfg.target(ref)
            estimate_cost(job.body, target.model, cfg.settings.quota, cfg.settings.jobs)
            adapter_for(target.provider_config.dialect).prepare(job.body, target.model.id, 16)


def _parse(source: Any, cfg: Config) -> list[JobSpec] | BatchInvalid:
    try:
        return parse_batch(source, cfg)
    except BatchInvalid as exc:
        return exc


@FUZZ
@given(data=st.binary(max_size=400))
def test_any_bytes_give_jobs_or_line_numbered_problems(cfg: Config, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.jsonl"
        path.write_bytes(data)
        _check(_parse(path, cfg), data.count(b"\n") + 1, cfg)


@FUZZ
@given(data=st.data())
def test_any_request_lines_give_jobs_or_line_numbered_problems(cfg: Config, data) -> None:
    objs = data.draw(st.lists(request_objects(cfg), min_size=1, max_size=4))
    lines = [json.dumps(o) for o in objs]  # NaN and Infinity included, as JSON writers do
    if data.draw(st.booleans()):  # and a line broken somewhere
        i = data.draw(st.integers(0, len(lines) - 1))
        cut = data.draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:cut] + data.draw(st.text(max_size=4)) + lines[i][cut:]
    _check(_parse(lines, cfg), len(lines), cfg)
    with tempfile.TemporaryDirectory() as d:  # the same through a file (bytes, line cap)
        path = Path(d) / "in.jsonl"
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
        _check(_parse(path, cfg), len(lines), cfg)


@FUZZ
@given(body=messages)
def test_well_formed_jobs_with_any_messages(cfg: Config, body: Any) -> None:
    line = json.dumps({"custom_id": "a", "body": {"model": "fast", "messages": body}})
    _check(_parse([line], cfg), 1, cfg)


@FUZZ
@example(lines=[b"x" * 4, b""], endings=[b"\r\n"] * 8, last=b"", cap=3)  # CR past the cap
@example(lines=[b"x" * 5], endings=[b"\n"] * 8, last=b"\r\n", cap=3)
@given(lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
                      min_size=1, max_size=8),
       endings=st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=8, max_size=8),
       last=st.sampled_from([b"", b"\n", b"\r\n"]), cap=st.integers(1, 30))
def test_the_line_reader_splits_like_a_text_editor_and_caps_exactly(
        lines: list[bytes], endings: list[bytes], last: bytes, cap: int) -> None:
    """Whatever the line lengths, endings and cap: the reader yields one item per line,
    the line itself when its content (without CR/LF) has at most ``cap`` bytes, else
    ``_TooLong`` with its exact size."""
    from dispatcher.batchfile import _file_lines, _TooLong

    data = b"".join(line + end for line, end in zip(lines[:-1], endings, strict=False))
    data += lines[-1] + last
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.jsonl"
        path.write_bytes(data)
        got = list(_file_lines(path, cap))
    raws = data.split(b"\n")
    if raws[-1] == b"":  # the file ends with a newline (or is empty): no line after it
        raws.pop()
    assert len(got) == len(raws)
    for item, raw in zip(got, raws, strict=True):
        content = raw.rstrip(b"\r")
        if len(content) > cap:
            assert isinstance(item, _TooLong) and item.size == len(content), (item, raw)
        else:
            assert isinstance(item, bytes) and item.rstrip(b"\r\n") == content
