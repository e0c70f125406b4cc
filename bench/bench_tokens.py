"""Token- and neuron-bound throughput: tokens served / the limit, beside the ceiling the
reservation rule allows, and over-limit arrivals (must be 0).

    python bench/bench_tokens.py [--only prompt_s,prompt_min,max_tokens,groq,neurons]

Each scenario is one provider with one model, one ``dispatch worker --all`` process, the
simulator in its own process (``dispatch simulate``, which counts tokens like a byte-pair
tokenizer and judges every arrival against the limits), and a backlog of jobs:

- ``prompt_s``: prompt-heavy jobs (~1,400-character English prompts, ``max_tokens`` 32, all
  of it used) against 6,000 tokens per *second*;
- ``prompt_min``: the same against 60,000 tokens per minute;
- ``max_tokens``: short prompts with ``max_tokens`` 512 where answers use 32, against
  6,000 tokens per second, answers after 1.05-1.3 s (the reservation keeps the whole 512
  for the whole window: the ceiling is low, and exact);
- ``max_tokens_fast``: the same with answers after 50-300 ms (reconciled within the
  window, so the rule would allow more: ~33 requests a second, hence a backlog of 1,800 —
  with 500 it ran out ~17 s after the start, inside the measured window, and the figure
  measured the backlog, not the pipeline);
- ``groq``: Groq-like, 6,000 tokens and 30 requests per minute, latency 200-2,000 ms,
  ~800-character prompts, ``max_tokens`` 64;
- ``timeouts``: short prompts against 1,200 tokens per second, answers after 50-1,300 ms
  while the client waits 800 ms: about 4 requests in 10 time out after the upstream
  counted them (over-limit shows whether their charge was kept);
- ``cjk_tools``: 300 Chinese characters and 6 function tools per request against 20,000
  tokens per second (over-limit shows whether the estimate covers CJK and tools);
- ``neurons``: Cloudflare-like, 3,000 neurons per day shared by the provider (gpt-oss-120b
  rates), until the budget is spent (the day is set to be mid-way in the provider's zone).

Measured: tokens (neurons) the simulator admitted in a window after a warm-up (the
estimator learns in the warm-up), divided by what the limit allows in that window. The
ceiling (:func:`ceiling`): with a perfect prompt estimate, each request reserves ``P + M``
(prompt tokens as the upstream counts them, plus the ``max_tokens`` sent) until its answer
reconciles it to ``P + U``; for the calendar budget, ``floor(B / c) x c / B``. ``P`` and
``U`` are measured from the simulator. A scenario whose backlog runs out before its window
ends is flagged (``backlog_ran_out``, a warning): its figure is then only a floor.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    RemoteSimulator,
    Workers,
    flush_bench_db,
    job_line,
    machine,
    midday_timezone,
    new_namespace,
    result_json,
    use_namespace,
    write_config_dir,
)

_WORDS = ("the of and to in is that for it as with was on be by this are from at or an "
         "which have not they their one all were there been has more when will would "
         "service request quota window limit upstream provider worker estimate prompt "
         "reservation answer usage token model minute second budget schedule process "
         "throughput latency reliable careful measured ordinary customer delivery")
WORDS = _WORDS.split()
REPLY_TOKENS = 32  # the simulator's answers (dispatch simulate --reply-tokens)
GPT_OSS_120B = {"input_per_million": 31818, "output_per_million": 68182}

SCENARIOS: dict[str, dict[str, Any]] = {
    "prompt_s": {"limits": [{"unit": "tokens", "limit": 6000, "per": "second"}],
                 "chars": 1400, "max_tokens": 32, "latency": (0.05, 0.3), "concurrency": 24,
                 "warmup": 10, "window": 30, "jobs": 900},
    "prompt_min": {"limits": [{"unit": "tokens", "limit": 60000, "per": "minute"}],
                   "chars": 1400, "max_tokens": 32, "latency": (0.05, 0.3),
                   "concurrency": 24, "warmup": 15, "window": 60, "jobs": 500},
    "max_tokens": {"limits": [{"unit": "tokens", "limit": 6000, "per": "second"}],
                   "chars": 200, "max_tokens": 512, "latency": (1.05, 1.3), "concurrency": 24,
                   "warmup": 10, "window": 30, "jobs": 500},
    "max_tokens_fast": {"limits": [{"unit": "tokens", "limit": 6000, "per": "second"}],
                        "chars": 200, "max_tokens": 512, "latency": (0.05, 0.3),
                        "concurrency": 24, "warmup": 10, "window": 30, "jobs": 1800},
    "groq": {"limits": [{"unit": "requests", "limit": 30, "per": "minute"},
                        {"unit": "tokens", "limit": 6000, "per": "minute"}],
             "chars": 800, "max_tokens": 64, "latency": (0.2, 2.0), "concurrency": 8,
             "warmup": 15, "window": 60, "jobs": 120},
    "timeouts": {"limits": [{"unit": "tokens", "limit": 1200, "per": "second"}],
                 "chars": 40, "max_tokens": 32, "latency": (0.05, 1.3), "timeout_s": 0.8,
                 "max_retries": 3, "concurrency": 24, "warmup": 5, "window": 25, "jobs": 800},
    "cjk_tools": {"limits": [{"unit": "tokens", "limit": 20000, "per": "second"}],
                  "cjk": 300, "tools": 6, "max_tokens": 32, "latency": (0.05, 0.3),
                  "concurrency": 24, "warmup": 5, "window": 25, "jobs": 500},
    "neurons": {"provider_limits": [{"unit": "neurons", "limit": 3000, "per": "day"}],
                "neurons": GPT_OSS_120B, "chars": 1400, "max_tokens": 32,
                "latency": (0.05, 0.3), "concurrency": 16, "warmup": 0, "window": 60,
                "jobs": 400},
}


CJK = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你说"


def cjk_prompt(rng: random.Random, chars: int) -> str:
    """Chinese-like text of ``chars`` characters, a full stop every 12 to 30."""
    out = []
    while len(out) < chars:
        out += [rng.choice(CJK) for _ in range(rng.randint(12, 30))] + ["。"]
    return "".join(out[:chars])


def tools(n: int) -> list[dict[str, Any]]:
    """``n`` function tools with small JSON schemas, as agents send them."""
    return [{"type": "function", "function": {
        "name": f"lookup_{i}", "description": "Look up an order by id and return its status, "
        "items and the expected delivery date.",
        "parameters": {"type": "object", "properties": {
            "order_id": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{8}$"},
            "fields": {"type": "array", "items": {"enum": ["status", "items", "eta"]}}},
            "required": ["order_id"]}}} for i in range(n)]


def job(custom_id: str, s: dict[str, Any], rng: random.Random) -> str:
    """One batch line of scenario ``s``."""
    if "cjk" not in s:
        return job_line(custom_id, "fast", prompt(rng, s["chars"]), s["max_tokens"])
    body = {"model": "fast", "max_tokens": s["max_tokens"], "tools": tools(s["tools"]),
            "messages": [{"role": "user", "content": cjk_prompt(rng, s["cjk"])}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": body})


def prompt(rng: random.Random, chars: int) -> str:
    """English-like text of about ``chars`` characters (±10 %), sentences of common words."""
    want = int(chars * rng.uniform(0.9, 1.1))
    out: list[str] = []
    size = 0
    while size < want:
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
        sentence = " ".join(words).capitalize() + rng.choice([".", ".", ",", ";", "?"])
        out.append(sentence)
        size += len(sentence) + 1
    return " ".join(out)[:want]


def catalog(s: dict[str, Any]) -> dict[str, Any]:
    m: dict[str, Any] = {"id": "m1", "context_window": 131072, "max_output_tokens": 4096,
                         "limits": s.get("limits", [])}
    if s.get("neurons"):
        m["neurons"] = s["neurons"]
    return {
        "providers": {"providers": {"bench": {
            "base_url": "https://bench.invalid/v1", "api_key_env": "BENCH_UNUSED_KEY",
            "timezone": midday_timezone(), "limits": s.get("provider_limits", []),
            "models": [m], "concurrency": s["concurrency"],
            "timeout_s": s.get("timeout_s", 30), "max_retries": s.get("max_retries", 1)}}},
        "routes": {"routes": {"fast": ["bench/m1"], "reasoning": [], "bulk": [],
                              "vision": []}},
        "settings": {"routing": {"preference_delay_s": 0.5, "horizon_s": 1.0}},
    }


def ceiling(limit: float, window_s: float, prompt_t: float, max_tokens: int, used: float,
            latency: tuple[float, float]) -> float:
    """The most a rolling limit can serve under the reservation rule, as a share of it,
    with a perfect prompt estimate.

    A request holds ``P + M`` from its grant until its answer is reconciled to ``P + U``.
    When every answer takes at least the window (or ``M == U``), a window holds only whole
    reservations: at most ``floor(L / (P + M))`` of them. Otherwise (answers after ``d``
    seconds on average, ``d < T``) a steady flow fits ``L / (d (P + M) + (T - d)(P + U))``
    requests per second: the share is ``T (P + U)`` over that denominator (an upper bound
    that ignores rounding)."""
    if latency[0] >= window_s or max_tokens == used:
        return math.floor(limit / (prompt_t + max_tokens)) * (prompt_t + used) / limit
    d = sum(latency) / 2
    held = d * (prompt_t + max_tokens) + (window_s - d) * (prompt_t + used)
    return min(1.0, window_s * (prompt_t + used) / held)


def run(name: str, s: dict[str, Any], seed: int = 7) -> dict[str, Any]:
    from dispatcher.batches import submit
    from dispatcher.batchfile import parse_batch
    from dispatcher.config import load_config

    flush_bench_db()
    cfg_dir = write_config_dir(Path(tempfile.mkdtemp(prefix=f"bench-tokens-{name}-")),
                               catalog(s))
    cfg = load_config(cfg_dir, simulate=True)
    sim = RemoteSimulator(cfg_dir, s["latency"])
    ns = new_namespace(f"tok-{name}")
    use_namespace(ns, cfg_dir, sim.url)
    from workers.runtime import get_runtime

    rt = get_runtime()
    rt.sim_quota.ensure_limits()
    rng = random.Random(seed)
    lines = [job(f"{name}-{i}", s, rng) for i in range(s["jobs"])]
    specs = parse_batch(lines, cfg)
    key = "bench/m1"
    try:
        with Workers(cfg_dir, ns, sim.url, tag=f"tokens-{name}") as w:
            w.start("all", "--all")
            w.wait_ready(rt.r)
            t0 = time.monotonic()
            submit(specs, simulated=True, deadline_s=3600)
            time.sleep(max(0.0, t0 + s["warmup"] - time.monotonic()))
            a = sim.stats()
            if name == "neurons":  # until the budget is spent (nothing admitted for 8 s)
                last, still = a, time.monotonic()
                while time.monotonic() - t0 < s["window"]:
                    time.sleep(1.0)
                    b = sim.stats()
                    if b["targets"][key]["ok"] != last["targets"][key]["ok"]:
                        last, still = b, time.monotonic()
                    elif time.monotonic() - still > 8:
                        break
            else:
                time.sleep(max(0.0, t0 + s["warmup"] + s["window"] - time.monotonic()))
            b = sim.stats()
            window = time.monotonic() - t0 - s["warmup"]
    finally:
        sim.stop()
        flush_bench_db()
    ta, tb = a["targets"][key], b["targets"][key]
    ok = tb["ok"] - ta["ok"]
    tokens = tb["tokens"] - ta["tokens"]
    used_out = min(s["max_tokens"], REPLY_TOKENS)
    p = tokens / ok - used_out if ok else float("nan")
    dry = name != "neurons" and tb["received"] >= s["jobs"]
    if dry:  # the figure would measure the backlog, not the pipeline: say so, loudly
        print(f"WARNING {name}: the backlog of {s['jobs']} jobs ran out before the window "
              "ended; its figure is a floor (raise its 'jobs')", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"scenario": name, "backlog_ran_out": dry, "requests": ok, "over_limit":
                           b["totals"]["over_limit"], "rate_limited": b["totals"]["rate_limited"],
                           "prompt_tokens_avg": round(p, 1), "max_tokens": s["max_tokens"],
                           "used_tokens_avg": used_out}
    if name == "neurons":
        budget = s["provider_limits"][0]["limit"]
        n = s["neurons"]
        per_req = (p * n["input_per_million"] + used_out * n["output_per_million"]) / 1e6
        res = (p * n["input_per_million"] + s["max_tokens"] * n["output_per_million"]) / 1e6
        spent = tb["neurons"]
        out.update(unit="neurons", limit=f"{budget} neurons/day", used=round(spent, 1),
                   share=spent / budget,
                   ceiling=math.floor(budget / res) * per_req / budget)
    else:
        lim = next(x for x in s["limits"] if x["unit"] == "tokens")
        per_s = {"second": 1, "minute": 60}[lim["per"]]
        allowed = lim["limit"] * window / per_s
        req_lim = next((x for x in s["limits"] if x["unit"] == "requests"), None)
        ceil_share = ceiling(lim["limit"], per_s, p, s["max_tokens"], used_out, s["latency"])
        if req_lim:  # a request limit may bind first
            per_window = req_lim["limit"] * per_s / {"second": 1, "minute": 60}[req_lim["per"]]
            ceil_share = min(ceil_share, per_window * (p + used_out) / lim["limit"])
        out.update(unit="tokens", limit=f"{lim['limit']} tokens/{lim['per']}",
                   used=tokens, allowed=round(allowed), share=tokens / allowed,
                   ceiling=ceil_share, window_s=round(window, 1))
    out["of_ceiling"] = out["share"] / out["ceiling"] if out["ceiling"] else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SCENARIOS))
    opts = ap.parse_args()
    print(machine() + "; shared with other engineers' runs (figures are indicative)")
    rows = []
    for name in opts.only.split(","):
        res = run(name, SCENARIOS[name])
        rows.append(res)
        print(f"{name:11s} {res['limit']:>22s}  used {res['share']:.3f} of the limit; ceiling "
              f"{res['ceiling']:.3f}; {res['of_ceiling']:.3f} of the ceiling; over-limit "
              f"{res['over_limit']}; requests {res['requests']}; prompt {res['prompt_tokens_avg']}"
              f" tokens, max_tokens {res['max_tokens']}, used {res['used_tokens_avg']}",
              flush=True)
    print("\n| scenario | limit | used / limit | ceiling | used / ceiling | over-limit |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['limit']} | {r['share']:.3f} | {r['ceiling']:.3f} | "
              f"{r['of_ceiling']:.3f} | {r['over_limit']} |")
    result_json("tokens", {"scenarios": rows})


if __name__ == "__main__":
    main()
