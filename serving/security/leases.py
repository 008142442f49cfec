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
  when the last metered request of the organisation in this process ends, the lease goes back to the
  database in that request's settlement (the recorder's group commit), all but the *stock*: the part the
  last lease took beyond what its request lacked (zero when the fraction of what was left did not exceed
  the request, so small budgets come back whole at once). The stock lets the next request of an idle
  process go without a round trip; it goes back after ``credit_lease_idle_s`` without a request of the
  organisation (a keeper thread), and at exit. A ``kill -9`` loses at most the lease (credits never spent,
  never over-spent). While one process holds a lease, another may refuse a request that the lease would
  have covered: at most one lease per other process, each at most the fraction of what was left.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

from serving.security.quota import WINDOW_S, QuotaStore, RateDecision

log = logging.getLogger(__name__)


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

    def __init__(self, quota: QuotaStore, fraction: float = 0.1, idle_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.quota, self.fraction, self.idle_s, self.clock = quota, fraction, idle_s, clock
        self._held: dict[int, int] = {}
        self._in_flight: dict[int, int] = {}
        self._left: dict[int, int] = {}
        """What the database had left after this process's last lease (sizes the next one)."""
        self._extra: dict[int, int] = {}
        """What the last lease took beyond what its request lacked: the stock an idle process may keep."""
        self._idle_since: dict[int, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._keeper: threading.Thread | None = None
        # At exit (a SIGTERM drains the requests first) every stock goes back.
        self._finalizer = weakref.finalize(self, _return_all, quota, self._held, self._lock)

    def close(self) -> None:
        """Give back every credit leased and not handed out, now (what happens at exit)."""
        self._finalizer()

    def held(self, org_id: int) -> int:
        """Credits this process holds for ``org_id`` and has not handed out."""
        return self._held.get(org_id, 0)

    def begin(self, org_id: int) -> None:
        """A metered request of ``org_id`` starts (pair with :meth:`end`)."""
        with self._lock:
            self._in_flight[org_id] = self._in_flight.get(org_id, 0) + 1
            self._idle_since.pop(org_id, None)  # no longer idle: its stock stays until it is idle again

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
            if left:  # requests leasing at the same time size their leases from what this one leaves
                self._left[org_id] = max(0, left - lease)
        remaining = self.quota.lease(org_id, lease)
        if remaining is None and lease > need:
            lease, remaining = need, self.quota.lease(org_id, need)
        with self._lock:
            if remaining is None:
                held = self._held.get(org_id, 0) + have
                if held >= tokens:  # leases that other requests here took meanwhile cover it
                    self._held[org_id] = held - tokens
                    return True
                self._held[org_id] = held
                self._left[org_id] = self._extra[org_id] = 0
                return False
            self._held[org_id] = self._held.get(org_id, 0) + have + lease - tokens
            self._left[org_id] = remaining
            self._extra[org_id] = lease - need
            return True

    def end(self, org_id: int, reserved: int, used: int) -> int:
        """A metered request that reserved ``reserved`` and used ``used`` ends: what goes back to the database
        with its settlement: when no other request of the organisation is in flight here, the lease but its
        stock (kept ``idle_s`` for the next request); negative when it used more than it reserved, charged to
        the database as before leases."""
        with self._lock:
            self._in_flight[org_id] = self._in_flight.get(org_id, 1) - 1
            unused = reserved - used
            back = min(unused, 0)
            held = self._held.get(org_id, 0) + max(unused, 0)
            if self._in_flight[org_id] <= 0:
                del self._in_flight[org_id]
                keep = min(held, self._extra.get(org_id, 0)) if self.idle_s > 0 else 0
                back, held = back + held - keep, keep
                if keep:
                    self._idle_since[org_id] = self.clock()
                    self._start_keeper()
            self._held[org_id] = held
            return back

    def return_idle(self) -> None:
        """Give back the stock of every organisation without a request here for ``idle_s`` (the keeper's job;
        blocking)."""
        now = self.clock()
        with self._lock:
            due = [org for org, since in self._idle_since.items()
                   if now - since >= self.idle_s and org not in self._in_flight]
            amounts = {org: self._held.pop(org, 0) for org in due}
            for org in due:
                del self._idle_since[org]
        for org, amount in amounts.items():
            try:
                self.quota.give_back(org, amount)
            except Exception:  # the credits stay out of reach (never over-spent); said in the log
                log.exception("could not give back %d leased credits of organisation %d", amount, org)

    def _start_keeper(self) -> None:
        """(Under the lock.) The thread that returns idle stocks, started on first need. It is not woken per
        request (that cost more than the rest of the lease): it looks at least once a second, so a stock goes
        back within ``idle_s`` + 1 s."""
        if self._keeper is None or not self._keeper.is_alive():
            self._keeper = threading.Thread(target=_keep, args=(weakref.ref(self),), name="nexus-k-leases",
                                            daemon=True)
            self._keeper.start()

    def _next_due(self) -> float | None:
        with self._lock:
            if not self._idle_since:
                return None
            return min(self._idle_since.values()) + self.idle_s - self.clock()


def _keep(ref: weakref.ref[CreditLeases]) -> None:
    """The keeper thread: sleep until the next stock is due, return it; end with its ``CreditLeases``."""
    while (leases := ref()) is not None:
        wait = leases._next_due()
        if wait is None or wait > 0:
            with leases._wake:
                leases._wake.wait(timeout=min(wait, 1.0) if wait is not None else 1.0)
        else:
            leases.return_idle()
        del leases


def _return_all(quota: QuotaStore, held: dict[int, int], lock: threading.Lock) -> None:
    """At exit: every credit leased and not handed out goes back."""
    with lock:
        amounts = {org: n for org, n in held.items() if n}
        held.clear()
    for org, amount in amounts.items():
        try:
            quota.give_back(org, amount)
        except Exception:
            log.exception("could not give back %d leased credits of organisation %d at exit", amount, org)
