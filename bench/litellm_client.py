"""Runs INSIDE LiteLLM's own venv (not ours): one LiteLLM Router process with a backlog.

    /tmp/litellm-venv/bin/python bench/litellm_client.py SIM_URL SECONDS CONCURRENCY \
        DEPLOYMENTS_JSON [REDIS_URL]

DEPLOYMENTS_JSON: [{"provider": "alpha", "model": "a1", "rpm": 60, "tpm": null}, ...] -
one model group "bench" with one deployment per entry, pointed at the simulator's
OpenAI-compatible endpoint ``SIM_URL/<provider>/v1``; usage-based-routing-v2 (the
rpm/tpm-aware strategy); with REDIS_URL, the Router shares its usage counters there (the
multi-process setup LiteLLM documents). CONCURRENCY coroutines each send one request
after another for SECONDS (a backlog that never runs dry). Prints one JSON line.
"""

import asyncio
import json
import sys
import time

import litellm
from litellm import Router

litellm.suppress_debug_info = True


async def main() -> None:
    sim, seconds, conc, deps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), \
        json.loads(sys.argv[4])
    redis_url = sys.argv[5] if len(sys.argv) > 5 else None
    model_list = []
    for d in deps:
        params = {"model": f"openai/{d['model']}", "api_base": f"{sim}/{d['provider']}/v1",
                  "api_key": "simulated", "rpm": d["rpm"]}
        if d.get("tpm"):
            params["tpm"] = d["tpm"]
        model_list.append({"model_name": "bench", "litellm_params": params})
    kw = {"redis_url": redis_url} if redis_url else {}
    router = Router(model_list=model_list, routing_strategy="usage-based-routing-v2", **kw)
    counts = {"ok": 0, "error": 0}
    stop = time.monotonic() + seconds

    async def one(i: int) -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1
            try:
                await router.acompletion(model="bench", max_tokens=32, messages=[
                    {"role": "user", "content": f"Say hello to the benchmark, briefly. {i}-{n}"}])
                counts["ok"] += 1
            except Exception:  # noqa: BLE001 - a refusal: try again, as a backlog would
                counts["error"] += 1
                await asyncio.sleep(0.05)

    await asyncio.gather(*(one(i) for i in range(conc)))
    print(json.dumps(counts), flush=True)


asyncio.run(main())
