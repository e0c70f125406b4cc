"""Pure arithmetic of the pump: how long one job occupies a target's rolling limits."""

from __future__ import annotations

import pytest

from dispatcher.config import load_config
from tests.cluster import model, provider, write_config
from workers.pump import spacing_s
from workers.quota.costs import Cost


@pytest.fixture
def cfg(tmp_path):
    return load_config(write_config(tmp_path / "c", {
        "alpha": provider(model("a1", limits=[
            {"unit": "requests", "limit": 30, "per": "minute"},
            {"unit": "tokens", "limit": 6000, "per": "minute"},
            {"unit": "requests", "limit": 1000, "per": "day"}])),
        "cf": provider(model("n1", neurons={"input_per_million": 1e6,
                                            "output_per_million": 1e6}),
                       limits=[{"unit": "neurons", "limit": 100, "per": "second"}]),
    }, {"fast": ["alpha/a1"]}), simulate=True)


def test_the_binding_rolling_limit_sets_the_spacing(cfg):
    t = cfg.target("alpha/a1")
    assert spacing_s(t, Cost(1, 100)) == pytest.approx(2.0)    # 30 requests/minute binds
    assert spacing_s(t, Cost(1, 600)) == pytest.approx(6.0)    # 600 of 6,000 tokens/minute


def test_neurons_are_compared_in_the_same_unit(cfg):
    # 50 neurons (50,000 milli-neurons) of a 100 neurons/second limit: half a second
    assert spacing_s(cfg.target("cf/n1"), Cost(1, 0, 50_000)) == pytest.approx(0.5)
