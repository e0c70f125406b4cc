"""Gateway calls hold a concurrency slot on their target, like batch calls do.

A provider's ``concurrency`` bounds the calls in flight per target. Batch calls hold their
slot as members of the job store's ``queued:T``/``calling:T`` sets; a call the HTTP
gateway makes itself holds one as a member of ``{ns}:gwcalling:T``, scored by when its
lease ends (``gwtake.lua`` takes it only while T has a slot free, counting all three).
The pump counts live gateway slots in its occupancy (``JobStore.read_occupancy``), and its
hand-out refuses a target that filled up since it counted, so batch and gateway calls
together never exceed ``concurrency``.

The lease is the provider's ``timeout_s`` plus :data:`LEASE_MARGIN_S`: a gateway process
that dies leaves its slots behind for at most that long. While a call lasts longer (a
stream may run for minutes: the client's timeout bounds each read, not the whole call), this
process's :class:`Slots` keeper extends its lease every :data:`REFRESH_S`.

Giving a slot back is off the answer's path: :meth:`Slots.free` only queues it and the
keeper's thread writes it at once (a ``ZREM``, and the waiting sets the target may serve
pushed on the wake list, as ``release.lua`` does, so the pump reuses the slot at once).
A request that finds the slot still taken by this process's own pending release waits
for that write (:meth:`Slots.settle`) instead of for a poll.

Taking the slot costs no round trip of its own: the gateway packs ``gwtake.lua`` with the
quota reservation (``QuotaEngine.reserve_along``). Only while a target was just found full
(:meth:`Slots.recently_full`) does a request take the slot first and reserve after it,
so waiting requests polling a full target do not reserve quota and give it back each time.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis

log = logging.getLogger("dispatch.slots")

LEASE_MARGIN_S = 30.0
"""Added to the provider's ``timeout_s``: how long a slot outlives a call that went silent."""
REFRESH_S = 10.0
"""How often the leases of calls still running are extended (well inside the lease)."""
FULL_MEMORY_S = 2.0
"""How long a target found full is approached slot first (see the module docstring)."""
SETTLE_S = 1.0
"""The longest a request waits for this process's pending release of a slot."""
IDLE_EXIT_S = 60.0
"""The keeper's thread ends after this long with no slot held or queued (a busy gateway
keeps one thread, not one per call)."""


def lease_s(provider_config: Any) -> float:
    return float(provider_config.timeout_s) + LEASE_MARGIN_S


@dataclass(frozen=True)
class Slot:
    """One gateway call's claim on ``target``: ``member`` in its gwcalling set."""

    target: str
    member: str
    concurrency: int
    lease_s: float


class Slots:
    """This process's gateway slots: taking, extending, giving back. Thread-safe; one per
    runtime (``Runtime.slots``)."""

    def __init__(self, rt: Any):
        self.rt = rt
        self._lock = threading.Condition()
        self._held: dict[str, Slot] = {}
        self._queue: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        self._pending: Counter[str] = Counter()
        self._full: dict[str, float] = {}
        self._thread: threading.Thread | None = None

    # -- taking ------------------------------------------------------------------------
    def new(self, target: str, provider_config: Any) -> Slot:
        """A slot to ask for (nothing is sent)."""
        return Slot(target, os.urandom(8).hex(), int(provider_config.concurrency),
                    lease_s(provider_config))

    def take_call(self, slot: Slot) -> tuple[Any, list[str], list[Any]]:
        """The script call taking ``slot``, to pack with a reservation."""
        return self.rt.store.gw_take_call(slot.target, slot.member, slot.concurrency,
                                          slot.lease_s)

    def take(self, slot: Slot) -> bool:
        """Take ``slot`` alone (one round trip); True when taken (then :meth:`held`)."""
        taken = self.rt.store.gw_take(slot.target, slot.member, slot.concurrency,
                                      slot.lease_s)
        if taken:
            self.held(slot)
        return taken

    def held(self, slot: Slot) -> None:
        """``slot`` was taken: keep its lease alive until :meth:`free`."""
        with self._lock:
            self._held[slot.member] = slot
            self._full.pop(slot.target, None)
            self._ensure_thread()

    # -- giving back -------------------------------------------------------------------
    def free(self, slot: Slot) -> None:
        """Give ``slot`` back (also when it may not have been taken: then a no-op write).
        Queued for the keeper's thread: the answer never waits for it."""
        with self._lock:
            self._held.pop(slot.member, None)
            self._pending[slot.target] += 1
            self._queue.put(slot)
            self._ensure_thread()

    def settle(self, target: str) -> bool:
        """Wait (up to :data:`SETTLE_S`) until this process's queued releases on ``target``
        are written; True if there were any (the slot may be free now: ask again)."""
        with self._lock:
            if not self._pending[target]:
                return False
            self._lock.wait_for(lambda: not self._pending[target], timeout=SETTLE_S)
            return True

    # -- a target at its concurrency -----------------------------------------------------
    def mark_full(self, target: str) -> None:
        with self._lock:
            self._full[target] = time.monotonic() + FULL_MEMORY_S

    def recently_full(self, target: str) -> bool:
        until = self._full.get(target)
        return until is not None and until > time.monotonic()

    # -- the keeper's thread -----------------------------------------------------------
    def _ensure_thread(self) -> None:
        """Start the keeper's thread if it is not running (called under the lock)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gateway-slots",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        """Write releases as they come, extend the leases of held slots every REFRESH_S;
        exit after IDLE_EXIT_S with nothing held or queued (started again on the next
        slot)."""
        kept_at = busy_at = time.monotonic()
        while True:
            try:
                first: Slot | None = self._queue.get(timeout=REFRESH_S / 2)
            except queue.Empty:
                first = None
            if first is not None:
                self._write_frees(first)
            now = time.monotonic()
            if now - kept_at >= REFRESH_S:
                kept_at = now
                self._keep()
            with self._lock:
                if self._held or not self._queue.empty() or first is not None:
                    busy_at = now
                elif now - busy_at >= IDLE_EXIT_S:
                    self._thread = None
                    return

    def _write_frees(self, first: Slot) -> None:
        batch = [first]
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        try:
            targets = {s.target for s in batch}
            sigs = [sig for t in targets for sig in self.rt.sigs_with(t)]
            self.rt.store.gw_free([(s.target, s.member) for s in batch], sigs)
        except redis.RedisError as exc:  # the leases end them; batch calls wait till then
            log.warning("gateway slots: %d not given back (Redis: %s); they lapse with "
                        "their lease", len(batch), exc)
        except Exception:  # never let the keeper die: later releases must still be written
            log.exception("gateway slots: %d not given back; they lapse with their lease",
                          len(batch))
        finally:
            with self._lock:
                for s in batch:
                    self._pending[s.target] -= 1
                    if self._pending[s.target] <= 0:
                        del self._pending[s.target]
                self._lock.notify_all()

    def _keep(self) -> None:
        with self._lock:
            held = list(self._held.values())
        try:
            self.rt.store.gw_keep([(s.target, s.member, s.lease_s) for s in held])
        except redis.RedisError as exc:
            log.warning("gateway slots: leases not extended (Redis: %s)", exc)
        except Exception:  # the next round tries again
            log.exception("gateway slots: leases not extended")
