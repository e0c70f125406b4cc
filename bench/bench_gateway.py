"""The HTTP gateway (``dispatch serve``): added latency, throughput beside LiteLLM's proxy,
both under binding limits, and interactive requests arriving over a saturating batch.

    python -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install 'litellm[proxy]'
    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 python bench/bench_gateway.py \
        [--only latency,throughput,binding,priority] [--litellm /tmp/litellm-venv/bin/litellm]

Every part runs the simulator as its own process (``dispatch simulate``) and the gateway as
its own process (``dispatch serve --simulate``, pointed at that simulator), one client
process (httpx, keep-alive) driving it; LiteLLM's proxy (``litellm --config``, one
worker) is pointed at the same simulator with the same model and limits.

- **latency**: one request at a time, in turn straight to the simulator, through the
  gateway, and through the floor proxies (``bench/floor_proxy.py``: the least a Python ASGI
  proxy with one Redis round trip adds here, with a thread hop, inline, or async);
  simulator latency 0, limits far from binding; added = through − direct at p50 and p99.
- **throughput**: ``--conc`` clients for ``--seconds`` each against our gateway and then
  LiteLLM's proxy, limits far too high to bind, simulator latency 20 ms: requests/s.
- **binding**: the same with 120 requests/minute and 3,000 tokens/minute on the one model
  (tokens bind): a warm-up, then a 60 s window; served in the window / the most the
  limits allow in it (utilization), and the simulator's over-limit count over the run.
  Our clients send ``X-Dispatch-Max-Wait: 60`` (they wait instead of failing).
- **priority**: a batch backlog saturating a tag (2 requests/s; ``dispatch worker``
  processes: a router and the provider's worker) while an interactive request arrives
  every 2 s; for each, the time until its target frees (the
  quota engine's probe just before sending) and the time it waited (latency minus the
  simulator's fixed 50 ms); utilization (batch + interactive, window of 60 s) and over-limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_utilization import allowed_in_window  # noqa: E402
from bench.common import (  # noqa: E402
    BENCH_REDIS_URL,
    LOG_DIR,
    ROOT,
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

MESSAGES = [{"role": "user", "content": "Say hello to the benchmark, briefly."}]
TOKEN = "sk-bench-" + os.urandom(12).hex()
"""Both servers check a bearer token (ours from DISPATCH_API_KEYS, LiteLLM's master key)."""
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return math.nan
    k = (len(xs) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(directory: Path, limits: list[dict], concurrency: int = 64) -> Path:
    return write_config_dir(directory, {
        "providers": {"providers": {"p": {
            "base_url": "https://bench.invalid/v1", "api_key_env": "BENCH_UNUSED_KEY",
            "dialect": "openai", "timezone": midday_timezone(), "concurrency": concurrency,
            "max_retries": 1, "limits": [],
            "models": [{"id": "m1", "context_window": 8192, "max_output_tokens": 1024,
                        "limits": limits}]}}},
        "routes": {"routes": {"fast": ["p/m1"]}},
        "settings": {"gateway": {"max_wait_s": 120.0}},
    })


def wait_http(url: str, timeout: float = 120.0) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


class Server:
    """A server process of the bench on a free local port; ``stop()`` ends its group."""

    proc: subprocess.Popen

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        from dispatcher.local import stop_process_groups

        stop_process_groups([self.proc])


class Gateway(Server):
    """``dispatch serve --simulate`` in its own process, on the bench Redis."""

    def __init__(self, cfg_dir: Path, sim_url: str, namespace: str):
        super().__init__()
        env = {**os.environ, "REDIS_URL": BENCH_REDIS_URL, "DISPATCH_NAMESPACE": namespace,
               "DISPATCH_CONFIG": str(cfg_dir), "DISPATCH_SIMULATOR_URL": sim_url}
        env["DISPATCH_API_KEYS"] = TOKEN
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = open(LOG_DIR / "gateway.log", "wb")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispatcher.cli", "serve", "--simulate", "--port",
             str(self.port), "--config", str(cfg_dir)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        wait_http(f"{self.url}/healthz")


class LiteLLMProxy(Server):
    """LiteLLM's proxy (one worker) for model ``fast`` = the simulator's ``p/m1``."""

    def __init__(self, litellm: str, sim_url: str, rpm: int | None, tpm: int | None):
        super().__init__()
        params: dict[str, Any] = {"model": "openai/m1", "api_base": f"{sim_url}/p/v1",
                                  "api_key": "simulated"}
        if rpm:
            params["rpm"] = rpm
        if tpm:
            params["tpm"] = tpm
        cfg = {"model_list": [{"model_name": "fast", "litellm_params": params}],
               "general_settings": {"master_key": TOKEN},
               "router_settings": {"routing_strategy": "usage-based-routing-v2",
                                   "enable_pre_call_checks": True, "num_retries": 0},
               "litellm_settings": {"num_retries": 0, "request_timeout": 60}}
        self.cfg_path = Path(tempfile.mkdtemp(prefix="litellm-")) / "config.json"
        self.cfg_path.write_text(json.dumps(cfg))
        log = open(LOG_DIR / "litellm.log", "wb")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen(
            [litellm, "--config", str(self.cfg_path), "--port", str(self.port),
             "--num_workers", "1"], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "LITELLM_LOG": "ERROR"}, start_new_session=True)
        wait_http(f"{self.url}/health/liveliness", timeout=240)


# -- the load generator (its own process) -------------------------------------------------


async def _load(url: str, seconds: float, conc: int, headers: dict[str, str]) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    counts: dict[str, int] = {}
    lat: list[float] = []
    stop = time.monotonic() + seconds
    headers = {**AUTH, **headers}
    async with httpx.AsyncClient(limits=limits, timeout=180) as client:
        async def one() -> None:
            while time.monotonic() < stop:
                t = time.perf_counter()
                try:
                    r = await client.post(f"{url}/v1/chat/completions", headers=headers,
                                          json={"model": "fast", "messages": MESSAGES,
                                                "max_tokens": 32})
                    key = str(r.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                counts[key] = counts.get(key, 0) + 1
                if key == "200":
                    lat.append(time.perf_counter() - t)
                else:
                    await asyncio.sleep(0.05)  # a refusal: try again, as a backlog would

        await asyncio.gather(*(one() for _ in range(conc)))
    return {"counts": counts, "ok": counts.get("200", 0), "p50_ms": pct(lat, 0.5) * 1000,
            "p99_ms": pct(lat, 0.99) * 1000}


def run_load(url: str, seconds: float, conc: int, headers: dict[str, str] | None = None
             ) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--load", url, str(seconds), str(conc),
         json.dumps(headers or {})], stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "BENCH_TOKEN": TOKEN})


def load_result(proc: subprocess.Popen[str]) -> dict:
    out, _ = proc.communicate(timeout=900)
    return json.loads(out.strip().splitlines()[-1])


# -- the parts ------------------------------------------------------------------------


class FloorProxy(Server):
    """``bench/floor_proxy.py`` on uvicorn in its own process: the least any Python ASGI
    proxy with one Redis round trip adds here (``mode``: thread, inline or async)."""

    def __init__(self, sim_url: str, mode: str):
        super().__init__()
        env = {**os.environ, "REDIS_URL": BENCH_REDIS_URL, "MODE": mode,
               "UPSTREAM": f"{sim_url}/p/v1/chat/completions"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "bench"),
             "floor_proxy:app", "--port", str(self.port), "--log-level", "warning",
             "--no-access-log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            start_new_session=True)
        wait_http(f"{self.url}/healthz")


FLOOR_MODES = ("thread", "inline", "async")


def part_latency(tmp: Path, samples: int) -> dict:
    """Direct, the gateway and the floor proxies, one request each per round, in turn."""
    import httpx

    flush_bench_db()
    cfg = config(tmp / "lat", [{"unit": "requests", "limit": 10_000_000, "per": "minute"}])
    sim = RemoteSimulator(cfg, (0.0, 0.0))
    gw = Gateway(cfg, sim.url, new_namespace("gwlat"))
    floors = {mode: FloorProxy(sim.url, mode) for mode in FLOOR_MODES}
    body = {"model": "fast", "messages": MESSAGES, "max_tokens": 32}
    sends = [("direct", f"{sim.url}/p/v1/chat/completions", {**body, "model": "m1"},
              {"Authorization": "Bearer simulated"}),
             ("gateway", f"{gw.url}/v1/chat/completions", body, AUTH),
             *((f"floor_{m}", f"{f.url}/v1/chat/completions", body, {})
               for m, f in floors.items())]
    lat: dict[str, list[float]] = {name: [] for name, *_ in sends}
    try:
        c = httpx.Client(timeout=30)
        for i in range(samples + 50):
            for name, url, payload, headers in sends:
                t = time.perf_counter()
                r = c.post(url, json=payload, headers=headers)
                took = time.perf_counter() - t
                assert r.status_code == 200, (name, r.text)
                if i >= 50:  # warm-up: connections, imports, script cache
                    lat[name].append(took)
    finally:
        gw.stop()
        sim.stop()
        for f in floors.values():
            f.stop()
    out: dict[str, Any] = {"samples": samples}
    for name, xs in lat.items():
        out[f"{name}_p50"] = round(pct(xs, .5) * 1000, 2)
        out[f"{name}_p99"] = round(pct(xs, .99) * 1000, 2)
    for name in lat:
        if name != "direct":
            for q in ("p50", "p99"):
                out[f"added_{q}_ms" if name == "gateway" else f"{name}_added_{q}_ms"] = round(
                    out[f"{name}_{q}"] - out[f"direct_{q}"], 2)
    return out


def part_throughput(tmp: Path, litellm: str | None, seconds: float, conc: int) -> dict:
    flush_bench_db()
    cfg = config(tmp / "tp", [{"unit": "requests", "limit": 10_000_000, "per": "minute"}])
    sim = RemoteSimulator(cfg, (0.02, 0.02))
    out: dict[str, Any] = {"seconds": seconds, "clients": conc, "sim_latency_ms": 20}
    try:
        gw = Gateway(cfg, sim.url, new_namespace("gwtp"))
        try:
            load_result(run_load(gw.url, 3, conc))  # warm-up
            ours = load_result(run_load(gw.url, seconds, conc))
        finally:
            gw.stop()
        out["ours"] = {**ours, "rps": round(ours["ok"] / seconds, 1)}
        if litellm:
            proxy = LiteLLMProxy(litellm, sim.url, None, None)
            try:
                load_result(run_load(proxy.url, 3, conc))
                theirs = load_result(run_load(proxy.url, seconds, conc))
            finally:
                proxy.stop()
            out["litellm"] = {**theirs, "rps": round(theirs["ok"] / seconds, 1)}
            out["ratio"] = round(out["ours"]["rps"] / max(out["litellm"]["rps"], 1e-9), 2)
    finally:
        sim.stop()
    return out


def _window(sim, cfg_dir: Path, warmup: float, window: float, t0: float,
            ) -> tuple[dict, dict, list]:
    time.sleep(max(0.0, t0 + warmup - time.monotonic()))
    s0, l0 = sim.stats(), sim.ledger.stats()
    time.sleep(max(0.0, t0 + warmup + window - time.monotonic()))
    return s0, sim.stats(), l0


def _utilization(cfg_dir: Path, s0: dict, s1: dict, l0: list, window: float) -> dict:
    from dispatcher.config import load_config

    cfg = load_config(cfg_dir, simulate=True)
    got = allowed_in_window(cfg, {"p/m1"}, s0["targets"], s1["targets"], window, l0)["p"]
    return {"served": got["served"], "allowed": round(got["allowed"], 1),
            "utilization": round(got["served"] / got["allowed"], 4) if got["allowed"] else None,
            "binding": got["binding"], "over_limit": s1["totals"]["over_limit"],
            "upstream_429": s1["totals"]["rate_limited"]}


BINDING = [{"unit": "requests", "limit": 120, "per": "minute"},
           {"unit": "tokens", "limit": 3000, "per": "minute"}]


def part_binding(tmp: Path, litellm: str | None, warmup: float, window: float,
                 conc: int) -> dict:
    out: dict[str, Any] = {"limits": "120 requests/min, 3000 tokens/min", "clients": conc}
    cfg = config(tmp / "bind", BINDING)
    runs = [("ours", None)] + ([("litellm", litellm)] if litellm else [])
    for label, binary in runs:
        flush_bench_db()
        sim = RemoteSimulator(cfg, (0.05, 0.3))
        server: Any = None
        try:
            if binary:
                server = LiteLLMProxy(binary, sim.url, 120, 3000)
                headers = {}
            else:
                server = Gateway(cfg, sim.url, new_namespace("gwbind"))
                headers = {"X-Dispatch-Max-Wait": "60"}
            t0 = time.monotonic()
            proc = run_load(server.url, warmup + window + 1, conc, headers)
            s0, s1, l0 = _window(sim, cfg, warmup, window, t0)
            load = load_result(proc)
            out[label] = {**_utilization(cfg, s0, s1, l0, window),
                          "client_statuses": load["counts"]}
        finally:
            if server is not None:
                server.stop()
            sim.stop()
    return out


def part_priority(tmp: Path, warmup: float, window: float, every: float) -> dict:
    import httpx

    from dispatcher.batches import submit
    from dispatcher.batchfile import parse_batch
    from dispatcher.config import load_config
    from workers.quota.costs import estimate_cost

    flush_bench_db()
    limits = [{"unit": "requests", "limit": 2, "per": "second"}]
    cfg_dir = config(tmp / "prio", limits, concurrency=8)
    cfg = load_config(cfg_dir, simulate=True)
    sim = RemoteSimulator(cfg_dir, (0.05, 0.05))
    ns = new_namespace("gwprio")
    use_namespace(ns, cfg_dir, sim.url)
    from workers.runtime import get_runtime

    rt = get_runtime()
    rt.sim_quota.ensure_limits()
    target = cfg.target("p/m1")
    body = {"model": "fast", "messages": MESSAGES, "max_tokens": 32}
    cost = estimate_cost(body, target.model, cfg.settings.quota, cfg.settings.jobs)
    rows: list[tuple[float, float]] = []
    gw = Gateway(cfg_dir, sim.url, ns)
    try:
        with Workers(cfg_dir, ns, sim.url, tag="gwprio") as w:
            w.start("router")
            w.start("provider", "--provider", "p")
            w.wait_ready(rt.r)
            specs = parse_batch([job_line(f"b{i}", "fast") for i in range(
                int((warmup + window) * 2 * 1.5) + 60)], cfg)
            t0 = time.monotonic()
            batch = submit(specs, simulated=True, deadline_s=3600)
            c = httpx.Client(timeout=120)
            time.sleep(warmup)
            s0, l0 = sim.stats(), sim.ledger.stats()
            end = t0 + warmup + window
            while time.monotonic() < end - 1.0:
                free_in = rt.sim_quota.probe(target, cost)
                until_free = 0.0 if free_in.granted else free_in.wait_s
                t = time.perf_counter()
                r = c.post(f"{gw.url}/v1/chat/completions", json=body,
                           headers={**AUTH, "X-Dispatch-Max-Wait": "60"})
                took = time.perf_counter() - t
                assert r.status_code == 200, r.text
                rows.append((until_free, max(0.0, took - 0.05)))
                time.sleep(max(0.0, every - took))
            time.sleep(max(0.0, end - time.monotonic()))
            s1 = sim.stats()
            info = rt.store.batch(batch) or {}
            from dispatcher.batches import cancel

            cancel(batch)
    finally:
        gw.stop()
        sim.stop()
    util = _utilization(cfg_dir, s0, s1, l0, window)
    excess = [waited - free for free, waited in rows]
    return {"limit": "2 requests/s", "interactive": len(rows),
            "until_free_p95_s": round(pct([f for f, _ in rows], .95), 3),
            "waited_p95_s": round(pct([w_ for _, w_ in rows], .95), 3),
            "waited_minus_until_free_p95_s": round(pct(excess, .95), 3),
            "waited_max_s": round(max((w_ for _, w_ in rows), default=0.0), 3),
            "batch_left_at_end": info.get("total", 0) - info.get("completed", 0)
            - info.get("failed", 0), **util}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        AUTH["Authorization"] = f"Bearer {os.environ['BENCH_TOKEN']}"
        url, seconds, conc, headers = sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), \
            json.loads(sys.argv[5])
        print(json.dumps(asyncio.run(_load(url, seconds, conc, headers))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="latency,throughput,binding,priority")
    ap.add_argument("--litellm", default="/tmp/litellm-venv/bin/litellm",
                    help="LiteLLM's CLI in its own venv (skipped if absent)")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--conc", type=int, default=32)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    args = ap.parse_args()
    litellm = args.litellm if Path(args.litellm).exists() else None
    parts = args.only.split(",")
    print(f"machine: {machine()} (shared with other work while measuring)", flush=True)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        try:
            if "latency" in parts:
                result_json("gateway_latency", part_latency(tmp, args.samples))
            if "throughput" in parts:
                result_json("gateway_throughput",
                            part_throughput(tmp, litellm, args.seconds, args.conc))
            if "binding" in parts:
                result_json("gateway_binding", part_binding(tmp, litellm, args.warmup,
                                                            args.window, 16))
            if "priority" in parts:
                result_json("gateway_priority", part_priority(tmp, args.warmup, args.window,
                                                              2.0))
        finally:
            flush_bench_db()


if __name__ == "__main__":
    main()
