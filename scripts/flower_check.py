#!/usr/bin/env python3
"""Browser check of Flower on a real dispatch setup (the issue's acceptance check).

Starts a throw-away setup on Redis DB 3 (the tests' database: it is flushed) — the
provider simulator, one ``dispatch worker --all`` and ``dispatch flower`` on a free port —
submits a few simulated jobs whose prompts carry a unique marker, then:

- asserts through Flower's REST API (``/api/tasks``, ``/api/queues/length``) that the
  ``dispatch.call`` tasks are listed with ``target=...`` and the tag/provider queues have
  lengths, and that the marker appears nowhere;
- opens ``/tasks`` and ``/broker`` in headless Chromium, screenshots the tasks page and
  asserts the rendered DOM shows the same (and never the marker).

    python scripts/flower_check.py                      # screenshot to docs/flower.png
    python scripts/flower_check.py --screenshot /tmp/f.png --keep 60

``tests/test_flower.py`` imports these functions; the browser part needs ``chromium``
(Debian: ``apt-get install chromium``), the API part only httpx.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dispatcher.local import stop_process_groups  # noqa: E402
from tests.cluster import (  # noqa: E402 - after the path fix, for direct runs
    TEST_REDIS_URL,
    Cluster,
    job_line,
    model,
    provider,
    write_config,
)

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-default-apps", "--hide-scrollbars", "--virtual-time-budget=5000",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, auth: tuple[str, str] | None = None,
              proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``url`` answers 200 (or the process dies, or time runs out)."""
    end = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before {url} answered")
        try:
            resp = httpx.get(url, auth=auth, timeout=5)
            if resp.status_code == 200:
                return
            last = resp.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer 200 in {timeout}s (last: {last})")


def start_flower(port: int, env: dict[str, str], log: Path,
                 *args: str) -> subprocess.Popen[bytes]:
    """``dispatch flower`` as a subprocess in its own session (killed as a group)."""
    out = open(log, "ab")  # noqa: SIM115 - the process owns it
    return subprocess.Popen(
        [sys.executable, "-m", "dispatcher.cli", "flower", f"--port={port}", *args],
        stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process_groups([proc], timeout=10)


def chromium(url: str, tmp: Path, screenshot: Path | None = None,
             size: tuple[int, int] = (1400, 900)) -> str:
    """Load ``url`` headless; with ``screenshot`` save a PNG, else return the DOM after JS."""
    exe = chromium_path()
    if exe is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp))
    argv = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}"]
    argv += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    try:
        done = subprocess.run([*argv, url], capture_output=True, timeout=90, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if screenshot is not None:
        if not screenshot.exists() or screenshot.stat().st_size == 0:
            raise RuntimeError(f"chromium wrote no screenshot: {done.stderr.decode()[-2000:]}")
        return ""
    if done.returncode != 0 or not done.stdout:
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return done.stdout.decode(errors="replace")


# --------------------------------------------------------------------- the demo setup
@dataclass
class Demo:
    cluster: Cluster
    flower: subprocess.Popen[bytes]
    url: str
    auth: tuple[str, str]
    batch: str
    marker: str
    custom_ids: list[str]
    targets: list[str]
    worker: str

    @property
    def browser_url(self) -> str:
        """The base URL with the basic-auth credentials, for the browser."""
        return self.url.replace("://", f"://{self.auth[0]}:{self.auth[1]}@", 1)


def demo_config(directory: Path) -> Path:
    return write_config(
        directory,
        {"alpha": provider(model("a1", limits=[{"unit": "requests", "limit": 100,
                                                "per": "day"}])),
         "beta": provider(model("b1"), dialect="groq")},
        {"fast": ["alpha/a1", "beta/b1"], "bulk": ["beta/b1"]},
        # No periodic catalog check: its task would start with the worker, possibly before
        # Flower listens, and show as a nameless half-seen task.
        {"routing": {"preference_delay_s": 1.0, "horizon_s": 1.0},
         "catalog": {"check_every_s": 0}},
    )


def shows(text: str, key: str, value: str) -> bool:
    """``key=value`` appears as a whole argsrepr item (any order of the items)."""
    return re.search(rf"[(\s]{key}={re.escape(value)}[,)]", text) is not None


def batch_calls(tasks: dict[str, Any], batch: str) -> list[dict[str, Any]]:
    """The ``dispatch.call`` tasks of one batch (other tests may share the database)."""
    return [t for t in tasks.values() if t.get("name") == "dispatch.call"
            and shows(t.get("args") or "", "batch", batch)]


def expected_queues() -> list[str]:
    """The demo's tag and provider queues (namespaced like the workers name them)."""
    from workers.celery_app import provider_queue, tag_queue

    return [tag_queue("fast"), tag_queue("bulk"), provider_queue("alpha"),
            provider_queue("beta")]


def wait_flower_tasks(url: str, batch: str, n: int, timeout: float = 30.0,
                      auth: tuple[str, str] | None = None) -> dict[str, Any]:
    """Until Flower has seen ``n`` successful calls of ``batch`` (it learns from events)."""
    end = time.monotonic() + timeout
    tasks: dict[str, Any] = {}
    while time.monotonic() < end:
        tasks = httpx.get(f"{url}/api/tasks", auth=auth, timeout=10).json()
        done = [t for t in batch_calls(tasks, batch) if t.get("state") == "SUCCESS"]
        if len(done) >= n:
            return tasks
        time.sleep(0.3)
    raise AssertionError(f"Flower saw fewer than {n} finished dispatch.call tasks: {tasks}")


@contextlib.contextmanager
def demo(tmp: Path, jobs: int = 6, flower_args: tuple[str, ...] = ()) -> Iterator[Demo]:
    """Simulator + worker + Flower on DB 3, with ``jobs`` simulated jobs run through them."""
    marker = "PROMPT-MARKER-" + uuid.uuid4().hex
    cfg = demo_config(tmp / "config")
    with Cluster(cfg, tmp) as c:
        c.start_worker("--all", name="flowerdemo")
        worker = f"flowerdemo-{c.namespace}@test"
        port = free_port()
        env = {**os.environ, "REDIS_URL": TEST_REDIS_URL, "DISPATCH_NAMESPACE": c.namespace,
               "DISPATCH_CONFIG": str(cfg)}
        # Flower 2 closes its REST API without auth: check the authenticated setup.
        auth = ("check", uuid.uuid4().hex)
        env["FLOWER_BASIC_AUTH"] = ":".join(auth)
        flower = start_flower(port, env, tmp / "flower.log", *flower_args)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/healthcheck", 60, proc=flower)
            # Flower learns tasks from events: wait until it sees the worker online.
            end = time.monotonic() + 60
            while time.monotonic() < end:
                workers = httpx.get(f"{url}/api/workers?refresh=1", auth=auth, timeout=20).json()
                if workers.get(worker, {}).get("active_queues"):
                    break  # the broker page lists the queues of known workers
                time.sleep(0.5)
            else:
                raise TimeoutError("Flower never saw the worker")
            ids = [f"job-{i}" for i in range(jobs)]
            lines = [job_line(cid, "fast" if i % 2 == 0 else "bulk",
                              text=f"{marker} question {i}") for i, cid in enumerate(ids)]
            batch = c.submit(lines)
            results = c.wait(batch, timeout=90)
            targets = sorted({f"{r['dispatch']['provider']}/{r['dispatch']['model']}"
                              for r in results})
            wait_flower_tasks(url, batch, jobs, auth=auth)
            yield Demo(c, flower, url, auth, batch, marker, ids, targets, worker)
        finally:
            stop(flower)


# ----------------------------------------------------------------------- the checks
def check_api(d: Demo) -> dict[str, Any]:
    """Flower's REST API lists our tasks by ids and the queue lengths, never a prompt."""
    for path in ("/api/tasks", "/tasks", "/broker"):
        assert httpx.get(d.url + path, timeout=10).status_code == 401, path
    tasks = httpx.get(f"{d.url}/api/tasks", auth=d.auth, timeout=10).json()
    calls = batch_calls(tasks, d.batch)
    assert len(calls) >= len(d.custom_ids), calls
    for t in calls:
        assert any(shows(t["args"], "target", x) for x in d.targets), t
    shown = " ".join(t["args"] for t in calls)
    for cid in d.custom_ids:
        assert shows(shown, "custom_id", cid), (cid, shown)
    # pump tasks appear only when jobs are left waiting (the submitter hands out the rest);
    # only this demo's worker counts (other tests' workers may share the database)
    ours = [t for t in tasks.values() if t.get("worker") == d.worker]
    assert ours and {t.get("name") for t in ours} <= {"dispatch.call", "dispatch.pump"}, ours
    queues = httpx.get(f"{d.url}/api/queues/length", auth=d.auth, timeout=20).json()
    names = {q["name"]: q["messages"] for q in queues.get("active_queues", [])}
    for q in expected_queues():
        assert q in names and isinstance(names[q], int), (q, queues)
    one = calls[0]["uuid"]
    assert httpx.get(f"{d.url}/api/task/info/{one}", timeout=10).status_code == 401
    info = httpx.get(f"{d.url}/api/task/info/{one}", auth=d.auth, timeout=10)
    for blob in (json.dumps(tasks), json.dumps(queues), info.text):
        assert d.marker not in blob, "a prompt leaked into Flower's API"
    return {"tasks": len(tasks), "calls": len(calls), "queues": names}


def check_pages(d: Demo, tmp: Path, screenshot: Path | None) -> dict[str, Any]:
    """The tasks and broker pages, as a browser renders them after their JS ran."""
    tasks_page = f"{d.browser_url}/tasks?worker={d.worker}"
    tasks_dom = chromium(tasks_page, tmp)
    assert "dispatch.call" in tasks_dom, tasks_dom[-3000:]
    for key, val in [("batch", d.batch), ("custom_id", d.custom_ids[0]),
                     *(("target", t) for t in d.targets)]:
        assert shows(tasks_dom, key, val), (key, val, tasks_dom[-3000:])
    broker_dom = chromium(f"{d.browser_url}/broker", tmp)
    for q in expected_queues():
        assert f">{q}<" in broker_dom, (q, broker_dom[-3000:])
    task_dom = chromium(f"{d.browser_url}/task/{_a_call(d)}", tmp)
    for dom in (tasks_dom, broker_dom, task_dom):
        assert d.marker not in dom, "a prompt leaked into a Flower page"
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        chromium(tasks_page, tmp, screenshot=screenshot)
    return {"tasks_page_bytes": len(tasks_dom), "broker_page_bytes": len(broker_dom)}


def _a_call(d: Demo) -> str:
    tasks = httpx.get(f"{d.url}/api/tasks", auth=d.auth, timeout=10).json()
    return batch_calls(tasks, d.batch)[0]["uuid"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "flower.png")
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--keep", type=float, default=0,
                    help="keep the setup running this many seconds after the checks")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep configuration and logs here (default: a temporary directory)")
    args = ap.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flower-check-")))
        else:
            tmp = args.workdir.resolve()
            tmp.mkdir(parents=True, exist_ok=True)
        with demo(tmp, args.jobs) as d:
            api = check_api(d)
            print(f"API ok: {api}")
            if chromium_path() is None:
                print("chromium not found: page checks skipped (apt-get install chromium)")
            else:
                pages = check_pages(d, tmp, args.screenshot.resolve())
                print(f"pages ok: {pages}; screenshot: {args.screenshot}")
            if args.keep:
                print(f"Flower at {d.url} for {args.keep:.0f}s")
                time.sleep(args.keep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
