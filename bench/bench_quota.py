"""Quota engine throughput next to a trivial script, on the same Redis, in the same run.

    python bench/bench_quota.py [--redis redis://127.0.0.1:6379/1] [--seconds 4]

Measures reservations/s of ``QuotaEngine.reserve`` for a target with 4 limits (2 rolling,
2 calendar; limits so large it never refuses), one reservation per round trip (no
pipelining), with 1 client and with 8 client processes; then ``redis-benchmark`` running
``EVALSHA <sha of "return 1"> 0`` with ``-c 1`` and ``-c 8``; and, to isolate the script's
own cost on the Redis thread from the Python client's, ``redis-benchmark`` running the
reserve script itself with the same keys and arguments the engine sends. Prints a table
and the ratios. Keys live under a namespace of their own and are deleted at the end.
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


def _worker(url: str, cfg_dir: str, ns: str, start_at: float, seconds: float, q) -> None:
    cfg = load_config(cfg_dir)
    engine = QuotaEngine(redis.Redis.from_url(url, decode_responses=True), cfg, ns)
    target = cfg.target("bench/model")
    engine.reserve(target, COST)  # connect and load the script before the clock starts
    while time.time() < start_at:
        time.sleep(0.001)
    n, stop = 0, start_at + seconds
    while time.time() < stop:
        for _ in range(50):
            if not engine.reserve(target, COST).granted:
                raise SystemExit("refused: the bench limits must never refuse")
        n += 50
    q.put(n)


def engine_rate(url: str, cfg_dir: str, ns: str, clients: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start_at = time.time() + 1.5 + 0.3 * clients  # after every process has started
    procs = [ctx.Process(target=_worker, args=(url, cfg_dir, ns, start_at, seconds, q))
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
    real = engine.redis.execute_command

    def capture(*args, **kwargs):
        seen.append(args)
        return real(*args, **kwargs)

    engine.redis.execute_command = capture  # type: ignore[method-assign]
    try:
        engine.reserve(target, COST)
    finally:
        engine.redis.execute_command = real  # type: ignore[method-assign]
    args = [str(a) for a in seen[-1]]
    token = args[args.index("r") + 1]
    return [a.replace(token, "__rand_int__") for a in args]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL",
                                                       "redis://127.0.0.1:6379/1"))
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("-n", type=int, default=200_000, help="redis-benchmark requests")
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
                mine = engine_rate(opts.redis, cfg_dir, ns, c, opts.seconds)
                base = redis_benchmark(opts.redis, c, opts.n, "EVALSHA", trivial, "0")
                lua = redis_benchmark(opts.redis, c, opts.n, *lua_cmd)
                rows.append((c, mine, base, lua))
        finally:
            keys = list(client.scan_iter(f"{ns}:*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i:i + 500])

    print()
    print("| clients | engine.reserve (Python) | reserve script (redis-benchmark) "
          "| trivial EVALSHA (redis-benchmark) | ratio Python/trivial | ratio script/trivial |")
    print("|---|---|---|---|---|---|")
    for c, mine, base, lua in rows:
        print(f"| {c} | {mine:,.0f}/s | {lua:,.0f}/s | {base:,.0f}/s | {mine / base:.2f} "
              f"| {lua / base:.2f} |")


if __name__ == "__main__":
    main()
