"""The chaos run of issue #11 (tests/chaos.py), long version, with default leases.

2 routers + 3 provider workers on their own redis-server (AOF, appendfsync everysec), the
simulator answering 5xx 5 %, timeouts 2 %, malformed bodies 1 %, 429 + Retry-After 3 %; a
random worker SIGKILLed every 10-20 s and started again; one Redis restart (SHUTDOWN, or
``--crash``: kill -9) at a third of the batch. Prints the figures as JSON.

    python bench/bench_chaos.py [--jobs 1500] [--seed 7] [--crash]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from tests.chaos import ChaosRun  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--crash", action="store_true", help="kill -9 Redis instead of SHUTDOWN")
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        got = ChaosRun(Path(tmp), jobs=args.jobs, seed=args.seed,
                       restart_redis_at_done=args.jobs // 3, redis_crash=args.crash,
                       timeout_s=args.timeout).run()
    print(json.dumps(got, indent=2))


if __name__ == "__main__":
    main()
