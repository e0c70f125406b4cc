"""A local OpenAI-compatible provider simulator that enforces configured limits.

It stands in for every configured provider (tests, ``dispatch run --simulate``,
benchmarks) and counts every request that arrives over a configured limit.
"""

from workers.simulator.server import Simulator

__all__ = ["Simulator"]
