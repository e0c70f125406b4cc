"""Quota engine throughput next to a trivial script, on the same Redis, in the same run.

    python bench/bench_quota.py [--redis redis://127.0.0.1:6379/1] [--rounds 3]

Measures reservations/s of ``QuotaEngine.reserve`` for a target with 4 limits (2 rolling,
2 calendar; limits so large it never refuses), one reservation per round trip (no
pipelining), with 1 client and with 8 client processes, next to ``redis-benchmark``
running ``EVALSHA <sha of "return 1"> 0`` with ``-c 1`` and ``-c 8``. Two more columns
separate the costs: ``redis-benchmark`` running the reserve script itself (the same keys
and arguments the engine sends, a random token each time): the script's cost on the
Redis thread; and a bare EVALSHA through redis-py in the same process layout: the
Python client's own cost. Keys live under a namespace of their own, deleted at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from urllib.parse import urlparse

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dispatcher.config import load_config  # noqa: E402
from workers.quota.costs import Cost  # noqa: E402
from workers.quota.engine import QuotaEngine  # noqa: E402

PROVIDERS = """\
providers:
  bench:
    base_url: https://bench.invalid/v1
    api_key_env: BENCH_API_KEY
    limits:
      - {unit: requests, limit: 1000000000, per: second}
      - {unit: requests, limit: 1000000000, per: day}
    models:
      - id: model
        limits:
          - {unit: tokens, limit: 1000000000000, per: minute}
          - {unit: tokens, limit: 1000000000000, per: month}
"""
COST = Cost(1, 900)


def make_config(directory: str):
    Path(directory, "providers.yaml").write_text(PROVIDERS)
    Path(directory, "routes.yaml").write_text("routes: {}\n")
    return load_config(directory)


def _worker(url: str, cfg_dir: str, ns: str, barrier, seconds: float, q,
            trivial: str | None) -> None:
    """One client process: engine.reserve in a loop (or, with ``trivial``, a bare EVALSHA
    of that sha through the same redis-py client, to show the client's own cost)."""
    cfg = load_config(cfg_dir)
    client = redis.Redis.from_url(url, decode_responses=True)
    engine = QuotaEngine(client, cfg, ns)
    target = cfg.target("bench/model")
    engine.reserve(target, COST)  # connect and load the script before the clock starts
    barrier.wait()  # every client is ready: start together
    n, stop = 0, time.time() + seconds
    while time.time() < stop:
        for _ in range(50):
            if trivial:
                client.evalsha(trivial, 0)
            elif not engine.reserve(target, COST).granted:
                raise SystemExit("refused: the bench limits must never refuse")
        n += 50
    q.put(n)


def client_rate(url: str, cfg_dir: str, ns: str, clients: int, seconds: float,
                trivial: str | None = None) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    barrier = ctx.Barrier(clients)
    procs = [ctx.Process(target=_worker, args=(url, cfg_dir, ns, barrier, seconds, q, trivial))
             for _ in range(clients)]
    for p in procs:
        p.start()
    total = sum(q.get(timeout=60 + seconds) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def redis_benchmark(url: str, clients: int, n: int, *command: str) -> float:
    u = urlparse(url)
    cmd = ["redis-benchmark", "-h", u.hostname or "127.0.0.1", "-p", str(u.port or 6379),
           "-n", str(n), "-c", str(clients), "-r", "1000000000", "-q", *command]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.findall(r"([\d.]+) requests per second", out.replace("\r", "\n"))
    if not m:
        raise RuntimeError(f"cannot read redis-benchmark output: {out!r}")
    return float(m[-1])


def reserve_command(engine: QuotaEngine, target) -> list[str]:
    """The EVALSHA the engine sends for one reservation, captured, with a random token."""
    seen: list[tuple] = []
    real = engine._evalsha

    def capture(sha, keys, args):
        seen.append(("EVALSHA", sha, len(keys), *keys, *args))
        return real(sha, keys, args)

    engine._evalsha = capture  # type: ignore[method-assign]
    try:
        engine.reserve(target, COST)
    finally:
        engine._evalsha = real  # type: ignore[method-assign]
    args = [a.decode() if isinstance(a, bytes) else str(a) for a in seen[-1]]
    token = args[args.index("r") + 1]
    return [a.replace(token, "__rand_int__") for a in args]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL",
                                                       "redis://127.0.0.1:6379/1"))
    ap.add_argument("--seconds", type=float, default=3.0, help="per Python run")
    ap.add_argument("-n", type=int, default=50_000, help="redis-benchmark requests per run")
    ap.add_argument("--rounds", type=int, default=3)
    opts = ap.parse_args()
    if not shutil.which("redis-benchmark"):
        raise SystemExit("redis-benchmark not found (apt-get install redis-tools)")

    ns = f"bench-{os.getpid()}"
    client = redis.Redis.from_url(opts.redis, decode_responses=True)
    trivial = client.script_load("return 1")
    with tempfile.TemporaryDirectory() as cfg_dir:
        cfg = make_config(cfg_dir)
        engine = QuotaEngine(client, cfg, ns)
        target = cfg.target("bench/model")
        print(f"target: {target} with {len(target.limits())} limits; "
              f"{os.cpu_count()} CPUs; redis {client.info('server')['redis_version']}")
        rows = []
        try:
            lua_cmd = reserve_command(engine, target)
            for c in (1, 8):
                # Interleaved rounds, medians: the machine is shared, its load drifts.
                rounds = []
                for _ in range(opts.rounds):
                    rounds.append({
                        "base": redis_benchmark(opts.redis, c, opts.n, "EVALSHA", trivial, "0"),
                        "lua": redis_benchmark(opts.redis, c, opts.n, *lua_cmd),
                        "py_base": client_rate(opts.redis, cfg_dir, ns, c, opts.seconds,
                                               trivial),
                        "engine": client_rate(opts.redis, cfg_dir, ns, c, opts.seconds),
                    })
                rows.append((c, rounds))
        finally:
            keys = list(client.scan_iter(f"{ns}:*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i:i + 500])

    print(f"\nmedian of {opts.rounds} interleaved rounds\n")
    print("| clients | trivial EVALSHA, redis-benchmark | reserve script, redis-benchmark "
          "| trivial EVALSHA, redis-py | engine.reserve, redis-py "
          "| engine / trivial (redis-benchmark) | script / trivial (both redis-benchmark) "
          "| engine / trivial (both redis-py) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, rounds in rows:
        m = {k: median(r[k] for r in rounds) for k in rounds[0]}
        ratio = {name: median(r[a] / r[b] for r in rounds)
                 for name, a, b in (("eng", "engine", "base"), ("lua", "lua", "base"),
                                    ("py", "engine", "py_base"))}
        print(f"| {c} | {m['base']:,.0f}/s | {m['lua']:,.0f}/s | {m['py_base']:,.0f}/s "
              f"| {m['engine']:,.0f}/s | {ratio['eng']:.2f} | {ratio['lua']:.2f} "
              f"| {ratio['py']:.2f} |")


if __name__ == "__main__":
    main()
