"""Jobs a provider certainly refuses (``n > 1`` on Groq, ``logprobs``...) route past it up
front: validation refuses a line no target can take, and at run time neither the pump nor a
call task going on with its target's backlog spends a request on such a target.

Real Redis, real ``dispatch worker`` subprocesses, the real simulator (whose Groq dialect
answers those bodies with a 400: a request that reached it shows in its counters).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.batchfile import BatchInvalid, JobSpec, parse_batch
from dispatcher.config import load_config
from tests.cluster import Cluster, job_line, model, provider, write_config
from workers.providers.adapters import refusal

ROUTING = {"routing": {"preference_delay_s": 2.0, "horizon_s": 1.0}}


def _config(tmp_path, groq_concurrency: int = 2):
    return write_config(
        tmp_path / "config",
        {"g": provider(model("gm"), dialect="groq", concurrency=groq_concurrency),
         "o": provider(model("om"), concurrency=2)},
        {"fast": ["g/gm", "o/om"], "groqonly": ["g/gm"]}, ROUTING)


def test_validation_refuses_a_line_no_target_takes_and_drops_refusing_targets(tmp_path):
    cfg = load_config(_config(tmp_path), simulate=True)
    lines = [job_line("ok", "fast"), job_line("n2", "groqonly", n=2),
             job_line("lp", "g/gm", logprobs=True), job_line("mixed", "fast", n=3)]
    with pytest.raises(BatchInvalid) as err:
        parse_batch(lines, cfg)
    got = [(p.line, p.code) for p in err.value.problems]
    assert got == [(2, "unsupported_param"), (3, "unsupported_param")]
    assert "n = 1" in err.value.problems[0].message
    assert "logprobs" in err.value.problems[1].message and "g/gm" in str(err.value)
    specs = parse_batch([lines[0], lines[3]], cfg)
    assert specs[0].targets == ["g/gm", "o/om"]
    assert specs[1].targets == ["o/om"]  # Groq would refuse n = 3: never offered to it


_EXTRAS = st.fixed_dictionaries({}, optional={
    "n": st.integers(1, 4), "logprobs": st.booleans(), "top_logprobs": st.integers(0, 3),
    "logit_bias": st.just({"1": 5}), "temperature": st.floats(0, 2)})


@settings(max_examples=60, deadline=None)
@given(extra=_EXTRAS, named=st.booleans(), tag=st.sampled_from(["fast", "groqonly"]))
def test_validation_keeps_exactly_the_targets_that_take_the_body(tmp_path_factory, extra,
                                                                 named, tag):
    """A pure rule: a line is refused iff every target of its route refuses the body, and
    otherwise goes to exactly those that take it, in the route's order."""
    cfg = load_config(_config(tmp_path_factory.mktemp("cfg")), simulate=True)
    line = json.loads(job_line("x", tag, **extra))
    if named:
        line["body"]["messages"][0]["name"] = "alice"
    route = [cfg.target(k) for k in cfg.routes[tag]]
    takers = [t.key for t in route if refusal(t, line["body"]) is None]
    try:
        specs = parse_batch([json.dumps(line)], cfg)
    except BatchInvalid as err:
        assert not takers and [p.code for p in err.problems] == ["unsupported_param"]
    else:
        assert takers and specs[0].targets == takers


def _spec(i: int, custom_id: str, tag: str, targets: list[str], **body) -> JobSpec:
    """A job as stored before validation knew the refusal (or with a changed config)."""
    line = json.loads(job_line(custom_id, tag, **body))
    return JobSpec(i + 1, custom_id, tag, None, line["body"], targets)


def test_refused_jobs_cost_the_refusing_target_no_request(tmp_path):
    """Plain and ``n = 2`` / ``logprobs`` jobs share one waiting set whose first choice is
    the Groq-like target: its call tasks chain through that backlog (the next-job path)
    and the pump picks targets for the rest; only the plain jobs may reach it."""
    from dispatcher.batches import submit

    cfg_dir = _config(tmp_path, groq_concurrency=1)
    specs = []
    for i in range(36):
        kind = i % 3
        extra = {} if kind == 0 else {"n": 2} if kind == 1 else {"logprobs": True}
        specs.append(_spec(i, f"j{i}-{kind}", "fast", ["g/gm", "o/om"], **extra))
    specs.append(_spec(36, "lonely", "groqonly", ["g/gm"], n=2))
    with Cluster(cfg_dir, tmp_path, latency=(0.02, 0.06)) as c:
        c.start_worker("--all")
        batch = submit(specs, simulated=True, deadline_s=600)
        results = {r["custom_id"]: r for r in c.wait(batch, timeout=120)}
        stats = c.stats()["targets"]
    assert stats["g/gm"]["rejected"] == 0  # no request the upstream refused
    served_by = {cid: r["dispatch"]["provider"] for cid, r in results.items()}
    to_groq = [cid for cid, by in served_by.items() if by == "g"]
    assert stats["g/gm"]["received"] == len(to_groq) > 0, served_by
    assert all(cid.endswith("-0") for cid in to_groq)  # only plain jobs went to Groq
    for cid, r in results.items():
        if cid == "lonely":
            continue
        assert r["response"]["status_code"] == 200, r
    lonely = results["lonely"]
    assert lonely["response"] is None
    err = lonely["error"]
    assert err["code"] == "rejected_by_all_targets" and "n = 1" in err["message"], lonely
