"""Reading and validating JSONL batches: every bad line reported, with its line number."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dispatcher.batchfile import (
    PINNED_TAG,
    PROBLEM_CODES,
    BatchInvalid,
    LineProblem,
    format_problems,
    parse_batch,
    parse_job,
)
from dispatcher.config import Config, load_config

PROVIDERS = """
providers:
  alpha:
    base_url: http://alpha.test/v1
    api_key_env: ALPHA_KEY
    models:
      - id: small
        context_window: 2000
        max_output_tokens: 1000
        limits:
          - {unit: tokens, limit: 1500, per: minute}
      - id: eye
        context_window: 4000
        max_output_tokens: 1000
        vision: true
      - id: loose
  beta:
    base_url: http://beta.test/v1
    api_key_env: BETA_KEY
    models:
      - id: org/big
        context_window: 8000
        max_output_tokens: 1000
"""

ROUTES = """
routes:
  fast: [alpha/small, beta/org/big]
  vision: [alpha/eye]
  reasoning: [beta/org/big]
  betaonly: [beta/org/big]
"""

URL = "/v1/chat/completions"


def make_config(tmp_path: Path, settings: str = "") -> Config:
    (tmp_path / "providers.yaml").write_text(PROVIDERS)
    (tmp_path / "routes.yaml").write_text(ROUTES)
    if settings:
        (tmp_path / "settings.yaml").write_text(textwrap.dedent(settings))
    return load_config(tmp_path)


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHA_KEY", "a")
    monkeypatch.setenv("BETA_KEY", "b")


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path)


def req(custom_id: Any = "r", model: Any = "fast", **top: Any) -> dict[str, Any]:
    body = top.pop("body", None) or {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 50,
    }
    line = {"custom_id": custom_id, "method": "POST", "url": URL, "body": body}
    line.update(top)
    return line


def dumps(*objs: Any) -> list[str]:
    return [o if isinstance(o, str) else json.dumps(o) for o in objs]


def problems_of(lines: list[str], cfg: Config) -> list[LineProblem]:
    with pytest.raises(BatchInvalid) as info:
        parse_batch(lines, cfg)
    return info.value.problems


IMAGE = [
    {"type": "text", "text": "what is this?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
]


# --- good batches -------------------------------------------------------------------


def test_parses_good_batch(cfg: Config) -> None:
    jobs = parse_batch(dumps(req("a"), req("b", model="reasoning")), cfg)
    assert [(j.line, j.custom_id, j.tag, j.pinned) for j in jobs] == [
        (1, "a", "fast", None),
        (2, "b", "reasoning", None),
    ]
    assert jobs[0].targets == ["alpha/small", "beta/org/big"]
    assert jobs[0].body["messages"][0]["content"] == "hi"


def test_top_level_tag_decides(cfg: Config) -> None:
    [job] = parse_batch(dumps(req("a", model="alpha/small", tag="reasoning")), cfg)
    assert (job.tag, job.pinned, job.targets) == ("reasoning", None, ["beta/org/big"])


def test_tag_ignores_whatever_body_model_says(cfg: Config) -> None:
    [job] = parse_batch(dumps(req("a", model="gpt-4o", tag="fast")), cfg)
    assert job.tag == "fast"


def test_body_model_target_pins_the_job(cfg: Config) -> None:
    [job] = parse_batch(dumps(req("a", model="beta/org/big")), cfg)
    assert job.pinned == "beta/org/big"
    assert job.targets == ["beta/org/big"]
    assert job.tag == "fast"  # the first route that lists the target


def test_pinned_target_on_no_route(cfg: Config) -> None:
    [job] = parse_batch(dumps(req("a", model="alpha/loose")), cfg)
    assert (job.tag, job.pinned, job.targets) == (PINNED_TAG, "alpha/loose", ["alpha/loose"])


def test_vision_job(cfg: Config) -> None:
    body = {"model": "vision", "messages": [{"role": "user", "content": IMAGE}]}
    [job] = parse_batch(dumps(req("v", body=body)), cfg)
    assert job.targets == ["alpha/eye"]


def test_method_and_url_optional_metadata_tolerated(cfg: Config) -> None:
    line = {"custom_id": "a", "body": req()["body"], "metadata": {"k": "v"}}
    [job] = parse_batch(dumps(line), cfg)
    assert job.custom_id == "a"


def test_blank_lines_skipped_but_counted(cfg: Config) -> None:
    jobs = parse_batch(["", json.dumps(req("a")), "   ", json.dumps(req("b")), ""], cfg)
    assert [j.line for j in jobs] == [2, 4]


def test_max_completion_tokens_accepted(cfg: Config) -> None:
    body = {"model": "fast", "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 20}
    assert parse_batch(dumps(req("a", body=body)), cfg)[0].targets


def test_reads_a_path_with_bom(cfg: Config, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(req("a")).encode() + b"\n\n")
    assert [j.custom_id for j in parse_batch(path, cfg)] == ["a"]
    assert [j.custom_id for j in parse_batch(str(path), cfg)] == ["a"]


def test_invalid_utf8_in_file(cfg: Config, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(json.dumps(req("a")).encode() + b"\n{\"custom_id\": \"\xff\"}\n")
    with pytest.raises(BatchInvalid) as info:
        parse_batch(path, cfg)
    [p] = info.value.problems
    assert (p.line, p.code) == (2, "invalid_json_line")
    assert "UTF-8" in p.message


# --- problems -----------------------------------------------------------------------


def test_every_problem_code_reported_together(cfg: Config, monkeypatch) -> None:
    monkeypatch.delenv("BETA_KEY")
    big = "x" * 30_000  # ~10k tokens: over every context window
    lines = dumps(
        req("ok-1"),  # 1
        "{not json",  # 2
        req("ok-1"),  # 3 duplicate
        req("c", url="/v1/embeddings"),  # 4
        req("d", method="GET"),  # 5
        req(None),  # 6
        req("f", model="fsat"),  # 7
        req("g", model="gamma/x"),  # 8
        req("h", body={"model": "fast", "messages": []}),  # 9
        req("i", body={"model": "fast", "messages": [{"role": "user", "content": "x"}],
                       "stream": True}),  # 10
        req("j", body={"model": "fast", "messages": [{"role": "user", "content": IMAGE}]}),  # 11
        req("k", body={"model": "fast", "messages": [{"role": "user", "content": big}]}),  # 12
        req("l", body={"model": "alpha/small", "max_tokens": 1000,
                       "messages": [{"role": "user", "content": "x" * 3000}]}),  # 13
        req("m", model="betaonly"),  # 14: beta disabled
        req("n", extra=1),  # 15
        req("o", body={"messages": [{"role": "user", "content": "x"}]}),  # 16
        req("p", body=["not", "an", "object"]),  # 17
        req("q", tag="nope"),  # 18
        "[1, 2]",  # 19
    )
    got = [(p.line, p.code) for p in problems_of(lines, cfg)]
    assert got == [
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
        (4, "url_mismatch"),
        (5, "method_mismatch"),
        (6, "missing_custom_id"),
        (7, "unknown_tag"),
        (8, "unknown_target"),
        (9, "no_messages"),
        (10, "stream_unsupported"),
        (11, "no_vision_target"),
        (12, "too_large"),
        (13, "max_tokens_too_large"),
        (14, "no_target"),
        (15, "unknown_key"),
        (16, "missing_model"),
        (17, "invalid_body"),
        (18, "unknown_tag"),
        (19, "invalid_json_line"),
    ]
    assert {code for _, code in got} <= set(PROBLEM_CODES)


def test_duplicate_message(cfg: Config) -> None:
    problems = problems_of(dumps(req("req-1"), req("req-2"), req("req-2"), req("req-2")), cfg)
    assert [str(p) for p in problems] == [
        "line 3: duplicate custom_id 'req-2' (first on line 2)",
        "line 4: duplicate custom_id 'req-2' (first on line 2)",
    ]


def test_several_problems_on_one_line(cfg: Config) -> None:
    line = req("a", method="PUT", url="/v1/completions", stream=True)
    codes = [p.code for p in problems_of(dumps(line), cfg)]
    assert codes == ["unknown_key", "method_mismatch", "url_mismatch"]
    [p] = [p for p in problems_of(dumps(line), cfg) if p.code == "unknown_key"]
    assert "'stream'" in p.message  # names the offending key


def test_bad_json_message_names_the_position(cfg: Config) -> None:
    [p] = problems_of(['{"custom_id": "a",}'], cfg)
    assert str(p).startswith("line 1: invalid JSON:")
    assert "column" in p.message


def test_unknown_target_hints(cfg: Config) -> None:
    p1, p2 = problems_of(dumps(req("a", model="alpha/nope"), req("b", model="zeta/x")), cfg)
    assert "unknown model 'nope'" in p1.message and "small, eye, loose" in p1.message
    assert "unknown provider 'zeta'" in p2.message and "alpha, beta" in p2.message


def test_unknown_tag_lists_known_tags(cfg: Config) -> None:
    [p] = problems_of(dumps(req("a", model="fsat")), cfg)
    assert "'fsat'" in p.message and "fast" in p.message and "reasoning" in p.message


def test_bad_max_tokens(cfg: Config) -> None:
    body = {"model": "fast", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}
    [p] = problems_of(dumps(req("a", body=body)), cfg)
    assert p.code == "invalid_body" and "max_tokens" in p.message


def test_message_without_role(cfg: Config) -> None:
    body = {"model": "fast", "messages": [{"content": "x"}]}
    [p] = problems_of(dumps(req("a", body=body)), cfg)
    assert p.code == "invalid_body" and "messages[0]" in p.message


def test_no_target_carries_missing_env(cfg: Config, monkeypatch) -> None:
    monkeypatch.delenv("ALPHA_KEY")
    monkeypatch.delenv("BETA_KEY")
    [p] = problems_of(dumps(req("a")), cfg)
    assert p.code == "no_target"
    assert p.missing_env == ("ALPHA_KEY", "BETA_KEY")
    assert "ALPHA_KEY is not set" in p.message


def test_empty_file(cfg: Config) -> None:
    [p] = problems_of(["", "  \n"], cfg)
    assert (p.line, p.code) == (0, "empty_file")
    assert str(p) == "batch: the batch has no request lines"


def test_too_many_tasks(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, settings="jobs: {max_lines: 2}\n")
    assert len(parse_batch(dumps(req("a"), req("b")), cfg)) == 2
    [p] = problems_of(dumps(req("a"), "", req("b"), req("c"), req("d")), cfg)
    assert (p.line, p.code) == (4, "too_many_tasks")
    assert "2" in p.message


def test_format_problems_limit() -> None:
    problems = [LineProblem(i, "invalid_json_line", "bad") for i in range(1, 8)]
    text = format_problems(problems, limit=3)
    assert text.splitlines() == [
        "line 1: bad",
        "line 2: bad",
        "line 3: bad",
        "... and 4 more problems (7 in all)",
    ]
    assert format_problems(problems[:2]) == "line 1: bad\nline 2: bad"


def test_batch_invalid_as_openai_errors(cfg: Config) -> None:
    with pytest.raises(BatchInvalid) as info:
        parse_batch(dumps(req("a"), req("a")), cfg)
    assert info.value.openai_errors() == {
        "object": "list",
        "data": [
            {
                "code": "duplicate_custom_id",
                "message": "duplicate custom_id 'a' (first on line 1)",
                "param": None,
                "line": 2,
            }
        ],
    }
    assert str(info.value) == "line 2: duplicate custom_id 'a' (first on line 1)"


# --- parse_job ----------------------------------------------------------------------


def test_parse_job(cfg: Config) -> None:
    job = parse_job(req("solo"), cfg)
    assert (job.line, job.custom_id, job.tag) == (1, "solo", "fast")


def test_parse_job_refuses_with_line(cfg: Config) -> None:
    with pytest.raises(BatchInvalid) as info:
        parse_job(req("s", model="nope"), cfg, line=7)
    assert [(p.line, p.code) for p in info.value.problems] == [(7, "unknown_tag")]
    with pytest.raises(BatchInvalid):
        parse_job("not a dict", cfg)  # type: ignore[arg-type]


# --- the shipped example ------------------------------------------------------------


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "batch.jsonl"


def test_example_batch_parses_in_simulation() -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "config", simulate=True)
    jobs = parse_batch(EXAMPLE, cfg)
    assert 6 <= len(jobs) <= 8
    assert {j.tag for j in jobs} >= {"fast", "reasoning", "bulk", "vision"}
    assert any(j.pinned for j in jobs)
    vision = next(j for j in jobs if j.tag == "vision")
    assert all(cfg.target(t).model.vision for t in vision.targets)


def test_example_batch_without_keys_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "config")
    for pc in cfg.providers.values():
        monkeypatch.delenv(pc.api_key_env, raising=False)
    problems = problems_of(EXAMPLE.read_text().splitlines(), cfg)
    assert {p.code for p in problems} == {"no_target"}
    assert len(problems) == len(EXAMPLE.read_text().splitlines())


# --- garbage: refused with the line number and the reason, never a traceback ----------

USER = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize("line, code, reason", [
    (json.dumps(req("a", body={"model": "fast", "messages": [
        {"role": "assistant", "tool_calls": 5}]})),
     "invalid_body", "body.messages[0].tool_calls: must be a list of objects (got int)"),
    (json.dumps(req("a", body={"model": "fast", "messages": USER, "tool_calls": 5})),
     "invalid_body", "body.tool_calls: belongs in a message"),
    ('{"custom_id": "a", "body": {"model": "fast", "max_tokens": ' + "7" * 5000 + "}}",
     "invalid_json_line", "an integer of 5000 digits (at most 40)"),
    ('{"custom_id": "a", "body": ' + "[" * 10_000 + "]" * 10_000 + "}",
     "invalid_json_line", "nested too deeply to decode"),
    ('{"custom_id": "a", "metadata": ' + "[" * 500 + "]" * 500 + "}",
     "invalid_value", "metadata[0][0][0]"),
    ('{"custom_id": "a\x00", "body": {}}', "invalid_json_line", "a NUL byte at column 17"),
    ('{"custom_id": "a", "body": {"temperature": NaN}}',
     "invalid_json_line", "NaN is not JSON (numbers must be finite)"),
    ('{"custom_id": "a", "body": {"temperature": 1e400}}',
     "invalid_json_line", "the number 1e400 is beyond the range of a double"),
    ('{"custom_id": "\\ud800", "body": {}}', "invalid_value",
     "custom_id: a lone UTF-16 surrogate escape"),
    (json.dumps(req("a", body={"model": "fast", "messages": [
        {"role": "user", "content": [{"type": "text", "text": 5}]}]})),
     "invalid_body", "body.messages[0].content[0].text: must be a string (got int)"),
    (json.dumps(req("a", body={"model": "fast", "messages": [{"role": "user", "content": 5}]})),
     "invalid_body", "body.messages[0].content: must be a string or a list of content parts"),
    (json.dumps(req("a", body={"model": "fast", "messages": [{"role": "robot"}]})),
     "invalid_body", "body.messages[0].role: must be one of"),
    (json.dumps(req("a", body={"model": "fast", "messages": USER, "n": "2"})),
     "invalid_body", "body.n: must be an integer from 1 to 128 (got string)"),
    (json.dumps(req("a", body={"model": "fast", "messages": USER, "tools": [{"type": 1}]})),
     "invalid_body", "body.tools[0].type: must be a string (got int)"),
])
def test_garbage_lines_are_refused_with_line_and_reason(
        cfg: Config, line: str, code: str, reason: str) -> None:
    problems = problems_of(dumps(req("ok"), line), cfg)
    assert problems[0].line == 2 and problems[0].code == code, problems
    assert reason in problems[0].message, problems[0].message


def test_a_line_over_the_byte_cap_is_skipped_unread(tmp_path: Path) -> None:
    """A 100 MB line: refused with its line number and size, the lines around it still
    checked, and never held in memory (peak allocation far below the line's size)."""
    import tracemalloc

    cfg = make_config(tmp_path, settings="jobs: {max_line_bytes: 1048576}\n")
    path = tmp_path / "huge.jsonl"
    head = b'{"custom_id": "big", "body": {"messages": [{"role": "user", "content": "'
    with path.open("wb") as fh:
        fh.write(json.dumps(req("a")).encode() + b"\n" + head)
        for _ in range(100):
            fh.write(b"x" * 2**20)
        fh.write(b'"}]}}\n')
        fh.write(json.dumps(req("c")).encode() + b"\n{bad json\n")
    tracemalloc.start()
    try:
        with pytest.raises(BatchInvalid) as info:
            parse_batch(path, cfg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(p.line, p.code) for p in info.value.problems] == [
        (2, "line_too_long"), (4, "invalid_json_line")]
    size = len(head) + 100 * 2**20 + 5
    assert f"{size:,} bytes" in info.value.problems[0].message
    assert "jobs.max_line_bytes" in info.value.problems[0].message
    assert peak < 16 * 2**20, f"peak {peak:,} bytes"


@pytest.mark.parametrize("content", [10, 11, 12])
def test_the_byte_cap_is_exact(tmp_path: Path, content: int) -> None:
    """A line of exactly ``max_line_bytes`` bytes (without its newline) passes; one more
    byte is refused, with LF, CRLF or no newline at the end of the file."""
    cfg = make_config(tmp_path, settings="jobs: {max_line_bytes: 11}\n")
    for ending in (b"\n", b"\r\n", b""):
        path = tmp_path / "cap.jsonl"
        path.write_bytes(b"1" * content + ending)
        with pytest.raises(BatchInvalid) as info:
            parse_batch(path, cfg)
        [p] = info.value.problems
        assert p.code == ("line_too_long" if content > 11 else "invalid_json_line"), ending


def test_an_inline_job_with_a_value_json_cannot_hold_is_refused(cfg: Config) -> None:
    """Inline jobs of schedules.yaml come from YAML, which also has dates and sets."""
    import datetime

    job = req("a", metadata={"when": datetime.date(2026, 1, 1)})
    with pytest.raises(BatchInvalid) as info:
        parse_job(job, cfg)
    [p] = info.value.problems
    assert (p.code, p.message) == ("invalid_value", "metadata.when: a date is not a JSON value")
