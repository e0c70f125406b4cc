"""The sender tells when a request is on the wire, so a late one can correct its quota."""

from __future__ import annotations

import time

from dispatcher.config import load_config
from tests.cluster import model, provider, write_config
from workers.providers.client import ProviderClient
from workers.simulator import Simulator


def test_on_sent_runs_once_after_the_write_and_before_the_answer(tmp_path):
    cfg = load_config(write_config(tmp_path / "c", {"alpha": provider(model("a1"))},
                                   {"fast": ["alpha/a1"]}), simulate=True)
    with Simulator(cfg, latency=(0.3, 0.3)) as sim:
        client = ProviderClient("alpha", concurrency=2, timeout_s=5)
        sent: list[float] = []
        start = time.monotonic()
        raw = client.send(sim.base_url("alpha"), "test-key",
                          {"model": "a1", "messages": [{"role": "user", "content": "hi"}],
                           "max_tokens": 4},
                          on_sent=lambda: sent.append(time.monotonic()))
        done = time.monotonic()
        client.close()
    assert raw.status == 200
    assert len(sent) == 1
    assert sent[0] - start < 0.1 and done - sent[0] >= 0.25  # written at once, answered later
