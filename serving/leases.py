"""What one server process takes from the shared rate windows and credits in blocks, and spends itself.

The database stays the only authority across replicas; a process just asks it less often:

* :class:`RateSlots`: a process counts ``max(1, rate_batch_fraction x what still fits)`` requests of this clock
  minute against the organisation's window with one conditional ``UPDATE`` and admits that many requests
  without asking again. The slots are counted before they are spent, so the sliding estimate every replica
  sees is never below the truth: no replica, nor all together, admits more than ``rpm``. Slots a process
  counted and did not spend by the end of the minute are lost (at most that fraction of what was left, per
  process and minute: with a small ``rpm`` the batch is one slot and the count is exact).
* :class:`CreditLeases`: a process leases ``max(what a request lacks, credit_lease_fraction x credits left)``
  with one conditional ``UPDATE`` (``remaining >= lease``, so the shared total never goes below zero) and
  serves reservations from the lease under a lock. A request's unused reservation goes back to the lease;
  when the last metered request of the organisation in this process ends, the whole lease goes back to the
  database in that request's settlement (the recorder's group commit). An idle process therefore holds
  nothing, and a SIGTERM (which drains requests) returns everything; a ``kill -9`` loses at most the lease
  (credits never spent, never over-spent). While one process holds a lease, another may refuse a request
  that the lease would have covered: at most one lease per other process, each at most the fraction of what
  was left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from serving.quota import WINDOW_S, QuotaStore, RateDecision


class RateSlots:
    """Rate-window slots counted ahead by this process: org -> (window, rpm, slots left)."""

    def __init__(self, quota: QuotaStore, batch_fraction: float = 0.1,
                 clock: Callable[[], float] = time.time) -> None:
        self.quota, self.batch_fraction, self.clock = quota, batch_fraction, clock
        self._slots: dict[int, tuple[int, int, int]] = {}
        self._lock = threading.Lock()

    def try_local(self, org_id: int, rpm: int) -> bool:
        """Spend a slot this process already counted in this minute (no database); False: ask :meth:`acquire`."""
        window = int(self.clock() // WINDOW_S)
        with self._lock:
            held = self._slots.get(org_id)
            if held is None or held[0] != window or held[1] != rpm or held[2] <= 0:
                return False
            self._slots[org_id] = (window, rpm, held[2] - 1)
            return True

    def acquire(self, org_id: int, rpm: int) -> RateDecision:
        """One request's slot: a local one, else a new batch from the database (blocking: run in a thread)."""
        if self.try_local(org_id, rpm):
            return RateDecision(True)
        now = self.clock()
        decision, counted = self.quota.take_rate_slots(org_id, rpm, now, self.batch_fraction)
        if counted > 1:
            window = int(now // WINDOW_S)
            with self._lock:
                held = self._slots.get(org_id)
                extra = held[2] if held is not None and held[0] == window and held[1] == rpm else 0
                self._slots[org_id] = (window, rpm, extra + counted - 1)
        return decision


class CreditLeases:
    """Credits leased by this process, per organisation, and its metered requests in flight."""

    def __init__(self, quota: QuotaStore, fraction: float = 0.1) -> None:
        self.quota, self.fraction = quota, fraction
        self._held: dict[int, int] = {}
        self._in_flight: dict[int, int] = {}
        self._left: dict[int, int] = {}
        """What the database had left after this process's last lease (sizes the next one)."""
        self._lock = threading.Lock()

    def held(self, org_id: int) -> int:
        """Credits this process holds for ``org_id`` and has not handed out."""
        return self._held.get(org_id, 0)

    def begin(self, org_id: int) -> None:
        """A metered request of ``org_id`` starts (pair with :meth:`end`)."""
        with self._lock:
            self._in_flight[org_id] = self._in_flight.get(org_id, 0) + 1

    def try_local(self, org_id: int, tokens: int) -> bool:
        """Reserve ``tokens`` from the lease (no database); False: ask :meth:`reserve`."""
        with self._lock:
            held = self._held.get(org_id, 0)
            if held < tokens:
                return False
            self._held[org_id] = held - tokens
            return True

    def reserve(self, org_id: int, tokens: int) -> bool:
        """Reserve ``tokens``: from the lease, else what it holds plus a new lease (blocking: run in a thread).
        False when the database has too little left: the request gets 429."""
        with self._lock:
            have = self._held.get(org_id, 0)
            if have >= tokens:
                self._held[org_id] = have - tokens
                return True
            self._held[org_id] = 0
            left = self._left.get(org_id)
        need = tokens - have
        lease = max(need, int(self.fraction * left)) if left else need
        remaining = self.quota.lease(org_id, lease)
        if remaining is None and lease > need:
            lease, remaining = need, self.quota.lease(org_id, need)
        with self._lock:
            if remaining is None:
                self._held[org_id] = self._held.get(org_id, 0) + have
                self._left[org_id] = 0
                return False
            self._held[org_id] = self._held.get(org_id, 0) + have + lease - tokens
            self._left[org_id] = remaining
            return True

    def end(self, org_id: int, reserved: int, used: int) -> int:
        """A metered request that reserved ``reserved`` and used ``used`` ends: what goes back to the database
        with its settlement (the whole lease when no other request of the organisation is in flight here;
        negative when it used more than it reserved, charged to the database as before leases)."""
        with self._lock:
            self._in_flight[org_id] = self._in_flight.get(org_id, 1) - 1
            unused = reserved - used
            back = min(unused, 0)
            held = self._held.get(org_id, 0) + max(unused, 0)
            if self._in_flight[org_id] <= 0:
                del self._in_flight[org_id]
                back, held = back + held, 0
            self._held[org_id] = held
            return back
