"""Simulator registrations: the oldest live one serves; nobody overwrites anybody."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from tests.cluster import TEST_REDIS_URL
from workers.simulators import SimulatorLease, live_simulator, renew, withdraw


@pytest.fixture
def r():
    client = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    ns = "tsim" + uuid.uuid4().hex[:8]
    yield client, ns
    for key in client.scan_iter(f"{ns}:*"):
        client.delete(key)


def test_the_oldest_live_registration_serves_and_a_newcomer_changes_nothing(r):
    client, ns = r
    assert live_simulator(client, ns) is None
    renew(client, ns, "http://a")
    renew(client, ns, "http://b")  # e.g. a `dispatch run --simulate` next to `up --simulate`
    renew(client, ns, "http://a")  # renewing keeps a's place
    assert live_simulator(client, ns) == "http://a"
    withdraw(client, ns, "http://b")
    assert live_simulator(client, ns) == "http://a"


def test_a_withdrawn_or_expired_registration_hands_over(r):
    client, ns = r
    renew(client, ns, "http://a")
    renew(client, ns, "http://b")
    withdraw(client, ns, "http://a")  # a clean stop
    assert live_simulator(client, ns) == "http://b"
    renew(client, ns, "http://c")
    client.pexpire(f"{ns}:simulator:http://b", 1)  # b's process died: its lease runs out
    time.sleep(0.05)
    assert live_simulator(client, ns) == "http://c"
    assert client.zrange(f"{ns}:simulators", 0, -1) == ["http://c"]  # the dead one dropped


def test_a_lease_lives_while_its_owner_does(r):
    client, ns = r
    lease = SimulatorLease(client, ns, "http://owner").start()
    try:
        assert live_simulator(client, ns) == "http://owner"
        assert client.pttl(f"{ns}:simulator:http://owner") > 0
    finally:
        lease.stop()
    assert live_simulator(client, ns) is None
