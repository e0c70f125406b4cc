"""Interactive traffic is served from a reserve a batch cannot touch, end to end (issue #16).

A real gateway (``dispatch serve``'s app on uvicorn), a real ``dispatch worker --all``
subprocess and the simulator; one target with a day limit half of which is reserved for
interactive use. The batch, larger than the whole limit, stops at its cap and its other jobs
wait for the reset; chat requests through the gateway (the official ``openai`` SDK) still
succeed from the reserve up to the full limit; the next one is a 429 whose Retry-After is
the provider's next midnight. The simulator counts every arrival: none over the limit;
``dispatch quota`` shows the reserve.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openai
import pytest

from tests.cluster import Cluster, job_line, model, provider, write_config
from tests.gateway_server import GatewayServer

LIMIT = 10
DAY = {"unit": "requests", "limit": LIMIT, "per": "day",
       "reserve": {"share": 0.5, "for": "interactive"}}
BATCH_CAP = 5  # what batch jobs may take of the day: LIMIT * (1 - share)


def noon_offset(now: datetime) -> str:
    """A fixed UTC offset that puts the provider's clock near noon: the day window cannot
    roll over while the test runs, whenever it runs."""
    minutes = (12 * 60 - (now.hour * 60 + now.minute)) % (24 * 60)
    if minutes > 12 * 60:
        minutes -= 24 * 60
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def seconds_to_midnight(offset: str, now: datetime) -> float:
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = map(int, offset[1:].split(":"))
    local = now + sign * timedelta(hours=hours, minutes=minutes)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - local).total_seconds()


def test_noon_offset_keeps_midnight_far_away() -> None:
    for hour in range(24):
        for minute in (0, 17, 59):
            now = datetime(2026, 3, 1, hour, minute, 30, tzinfo=UTC)
            left = seconds_to_midnight(noon_offset(now), now)
            assert 11.9 * 3600 < left <= 12 * 3600, (hour, minute, left)


@pytest.fixture
def env(tmp_path: Path):
    tz = noon_offset(datetime.now(UTC))
    cfg = write_config(tmp_path / "config",
                       {"a": provider(model("m", limits=[DAY]), timezone=tz)},
                       {"fast": ["a/m"]})
    with Cluster(cfg, tmp_path) as cluster, GatewayServer(cfg) as gw:
        cluster.start_worker("--all")
        client = openai.OpenAI(api_key="unused", base_url=f"{gw.url}/v1", max_retries=0)
        yield cluster, client, tz


def _chat(client: openai.OpenAI, text: str):
    return client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": text}], max_tokens=8,
        extra_headers={"X-Dispatch-Max-Wait": "2"})


def test_interactive_requests_use_the_reserve_a_batch_cannot_touch(env) -> None:
    cluster, client, tz = env
    batch = cluster.submit([job_line(f"b{i}", "fast", max_tokens=8) for i in range(12)])
    cluster.wait_for(lambda: cluster.batch(batch)["completed"] >= BATCH_CAP, 60,
                     "the batch to reach its cap")
    # Its other jobs wait for the reset: nothing more of the batch reaches the upstream.
    time.sleep(1.0)
    info = cluster.batch(batch)
    assert (info["completed"], info["failed"]) == (BATCH_CAP, 0), info
    assert cluster.stats()["targets"]["a/m"]["received"] == BATCH_CAP

    # Interactive requests through the gateway: served from the reserve, to the full limit.
    for i in range(LIMIT - BATCH_CAP):
        raw = _chat(client, f"now {i}")
        assert raw.http_response.status_code == 200
        assert raw.headers["x-dispatch-target"] == "a/m"
        assert raw.parse().choices[0].message.content
    # The day is spent: the next one is refused at once, told when capacity comes back.
    with pytest.raises(openai.RateLimitError) as refused:
        _chat(client, "one too many")
    response = refused.value.response
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    retry_after = int(response.headers["retry-after"])
    expected = seconds_to_midnight(tz, datetime.now(UTC))
    assert abs(retry_after - expected) <= 30, (retry_after, expected)

    info = cluster.batch(batch)
    assert (info["completed"], info["failed"], info["total"]) == (BATCH_CAP, 0, 12)
    stats = cluster.stats()
    assert stats["targets"]["a/m"]["received"] == LIMIT
    assert stats["totals"]["over_limit"] == 0
    # `dispatch quota` shows the reserve next to what is used
    from typer.testing import CliRunner

    from dispatcher.cli import app
    res = CliRunner().invoke(app, ["quota", "--simulated", "--config", str(cluster.config_dir)],
                             env={"COLUMNS": "200", "TTY_COMPATIBLE": "1"})
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if "requests/day" in line)
    assert f"{LIMIT - BATCH_CAP} interactive" in row, res.output
    from dispatcher.batches import cancel

    cancel(batch)
