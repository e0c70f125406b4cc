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
  6,000 tokens per second (the reservation must keep the whole 512: the ceiling is low);
- ``groq``: Groq-like, 6,000 tokens and 30 requests per minute, latency 200-2,000 ms,
  ~800-character prompts, ``max_tokens`` 64;
- ``neurons``: Cloudflare-like, 3,000 neurons per day shared by the provider (gpt-oss-120b
  rates), until the budget is spent (the day is set to be mid-way in the provider's zone).

Measured: tokens (neurons) the simulator admitted in a window after a warm-up (the
estimator learns in the warm-up), divided by what the limit allows in that window. The
ceiling: with a perfect prompt estimate, each request reserves ``P + M`` (prompt tokens as
the upstream counts them, plus the ``max_tokens`` sent) and uses ``P + U``; a rolling
limit of ``L`` admits at most ``floor(L / (P + M))`` such requests in any window, so the
most it can serve is ``floor(L / (P + M)) x (P + U) / L`` of the limit (for the calendar
budget: ``floor(B / c) x c / B``). ``P`` and ``U`` are measured from the simulator.
"""

from __future__ import annotations

import argparse
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
                   "chars": 200, "max_tokens": 512, "latency": (0.05, 0.3), "concurrency": 16,
                   "warmup": 10, "window": 30, "jobs": 500},
    "groq": {"limits": [{"unit": "requests", "limit": 30, "per": "minute"},
                        {"unit": "tokens", "limit": 6000, "per": "minute"}],
             "chars": 800, "max_tokens": 64, "latency": (0.2, 2.0), "concurrency": 8,
             "warmup": 15, "window": 60, "jobs": 120},
    "neurons": {"provider_limits": [{"unit": "neurons", "limit": 3000, "per": "day"}],
                "neurons": GPT_OSS_120B, "chars": 1400, "max_tokens": 32,
                "latency": (0.05, 0.3), "concurrency": 16, "warmup": 0, "window": 60,
                "jobs": 400},
}


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
            "models": [m], "concurrency": s["concurrency"], "timeout_s": 30,
            "max_retries": 1}}},
        "routes": {"routes": {"fast": ["bench/m1"], "reasoning": [], "bulk": [],
                              "vision": []}},
        "settings": {"routing": {"preference_delay_s": 0.5, "horizon_s": 1.0}},
    }


def ceiling(limit: float, prompt_t: float, max_tokens: int, used: float) -> float:
    """The most a rolling limit can serve, as a share of it, with a perfect estimate."""
    per_window = math.floor(limit / (prompt_t + max_tokens))
    return per_window * (prompt_t + used) / limit


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
    lines = [job_line(f"{name}-{i}", "fast", prompt(rng, s["chars"]), s["max_tokens"])
             for i in range(s["jobs"])]
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
    out: dict[str, Any] = {"scenario": name, "requests": ok, "over_limit":
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
        ceil_share = ceiling(lim["limit"], p, s["max_tokens"], used_out)
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
