"""Must-show of issue #11: every worker SIGKILLed mid-batch, then started again at once.

Cluster started the documented way (router, ``--provider pa``, ``--provider pb``), 150 jobs
via ``dispatch submit``, default settings (lease 12 s, visibility timeout 600 s). Prints
the figures as JSON: jobs served, ended twice, over-limit, restart -> last result.

    python bench/bench_kill_all.py [--jobs 150] [--wait 120]

Runs on the test Redis (DB 3) in a random namespace, deleted afterwards. To measure older
code, run it from a checkout of that code (copying this file and tests/kill_all.py there).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from tests.cluster import Cluster  # noqa: E402
from tests.kill_all import kill_all_config, run_kill_all  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=150)
    ap.add_argument("--kill-at", type=int, default=40, help="completed jobs before the kill")
    ap.add_argument("--wait", type=float, default=120.0, help="seconds to wait after restart")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = kill_all_config(Path(tmp) / "config")
        with Cluster(cfg, Path(tmp), latency=(0.3, 0.8), visibility_timeout=600) as c:
            got = run_kill_all(c, n_jobs=args.jobs, kill_at=args.kill_at, timeout_s=args.wait)
    print(json.dumps(got, indent=2))


if __name__ == "__main__":
    main()
