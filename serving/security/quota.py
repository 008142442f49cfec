"""Per-organisation request rates and token credits, shared by every server process through the database.

Rate: a sliding-window estimate over two fixed clock minutes (the previous minute's count weighted by
how much of it still lies inside the last 60 s, plus this minute's count), so a burst at a minute
boundary cannot double the rate. The count is taken with one conditional ``UPDATE ... WHERE count <
allowed``: the database serialises concurrent replicas.

Credits: reserve-then-settle. Before generation a request's handler reserves an upper bound of what it can
use, the exact prompt length plus ``n`` x ``max_tokens`` (``UPDATE ... SET remaining = remaining - r WHERE
remaining >= r``); when it ends, the unused part goes back and the real usage is recorded. An organisation
can therefore never be served more tokens than it has, however many requests run at once on however many
replicas.

The server itself takes rate slots in batches and credits in leases (``serving.security.leases``) through
:meth:`QuotaStore.take_rate_slots` and :meth:`QuotaStore.lease`, with the same conditional updates.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Update, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from serving.storage.db import Organisation, RateWindow, get_engine

WINDOW_S = 60


@dataclass(frozen=True)
class RateDecision:
    """Whether a request may go ahead and, if not, when to retry."""

    allowed: bool
    retry_after_s: int = 0


class QuotaStore:
    """Rate windows and credits in the security database (SQLAlchemy Core: these run on every request)."""

    def __init__(self, database_url: str) -> None:
        self.engine = get_engine(database_url)

    def acquire_rate(self, org_id: int, rpm: int, now: float | None = None) -> RateDecision:
        """Count one request against ``rpm`` if it fits the sliding minute, else say when to retry."""
        return self.take_rate_slots(org_id, rpm, now)[0]

    def take_rate_slots(self, org_id: int, rpm: int, now: float | None = None,
                        batch_fraction: float = 0.0) -> tuple[RateDecision, int]:
        """Count requests against ``rpm`` in this clock minute: one, or with ``batch_fraction`` > 0 a batch of
        ``max(1, batch_fraction x what still fits)`` that the calling process spends itself
        (``serving.security.leases``).
        Returns the decision and how many slots were counted (0 when refused). Counting slots ahead within the
        minute is as if those requests came now: the sliding estimate can only be higher, never exceeded."""
        now = time.time() if now is None else now
        window = int(now // WINDOW_S)
        elapsed = (now % WINDOW_S) / WINDOW_S
        with self.engine.begin() as s:
            counts = dict(
                s.execute(
                    select(RateWindow.window, RateWindow.count).where(
                        RateWindow.org_id == org_id, RateWindow.window.in_((window - 1, window))
                    )
                ).all()
            )
            previous = counts.get(window - 1) or 0
            allowed_now = rpm - math.floor(previous * (1.0 - elapsed))
            wanted = max(1, math.floor(batch_fraction * (allowed_now - (counts.get(window) or 0))))
            self._ensure_window(s, org_id, window)
            for slots in dict.fromkeys((wanted, 1)):
                counted = s.execute(
                    update(RateWindow)
                    .where(RateWindow.org_id == org_id, RateWindow.window == window,
                           RateWindow.count <= allowed_now - slots)
                    .values(count=RateWindow.count + slots)
                ).rowcount
                if counted:
                    return RateDecision(True), slots
            current = (
                s.scalar(select(RateWindow.count).where(RateWindow.org_id == org_id, RateWindow.window == window)) or 0
            )
        return RateDecision(False, _retry_after(rpm, previous, current, elapsed)), 0

    @staticmethod
    def _ensure_window(s: Any, org_id: int, window: int) -> None:
        """Create this minute's row if no replica did yet (and drop rows no estimate needs any more)."""
        insert_fn = pg_insert if s.dialect.name == "postgresql" else sqlite_insert
        created = s.execute(
            insert_fn(RateWindow).values(org_id=org_id, window=window, count=0).on_conflict_do_nothing()
        ).rowcount
        if created:
            s.execute(delete(RateWindow).where(RateWindow.org_id == org_id, RateWindow.window < window - 1))

    def reserve(self, org_id: int, tokens: int) -> bool:
        """Take ``tokens`` from the organisation's credits if it has that many (atomic)."""
        with self.engine.begin() as s:
            return bool(
                s.execute(
                    update(Organisation)
                    .where(Organisation.id == org_id, Organisation.tokens_remaining >= tokens)
                    .values(tokens_remaining=Organisation.tokens_remaining - tokens)
                ).rowcount
            )

    def lease(self, org_id: int, tokens: int) -> int | None:
        """Take ``tokens`` from the organisation's credits for this process to hand out itself (atomic, one
        conditional ``UPDATE``, counted in ``tokens_leased``); the credits left afterwards, or None when fewer
        than ``tokens`` were left."""
        with self.engine.begin() as s:
            row = s.execute(
                update(Organisation)
                .where(Organisation.id == org_id, Organisation.tokens_remaining >= tokens)
                .values(tokens_remaining=Organisation.tokens_remaining - tokens,
                        tokens_leased=func.coalesce(Organisation.tokens_leased, 0) + tokens)
                .returning(Organisation.tokens_remaining)
            ).first()
        return None if row is None else int(row[0])

    def give_back(self, org_id: int, tokens: int) -> None:
        """Return leased credits that were never handed out (atomic)."""
        if tokens:
            with self.engine.begin() as s:
                s.execute(SETTLE, {"org_id": org_id, "used": 0, "back": tokens, "unlease": tokens})

    def settle(self, org_id: int, reserved: int, used: int) -> None:
        """Return the unused part of a reservation and record the real usage (atomic)."""
        with self.engine.begin() as s:
            s.execute(settle_update(org_id, reserved, used))

    def remaining(self, org_id: int) -> int | None:
        """Credits left (None: unlimited)."""
        with self.engine.connect() as s:
            return s.scalar(select(Organisation.tokens_remaining).where(Organisation.id == org_id))


SETTLE = (
    update(Organisation)
    .where(Organisation.id == bindparam("org_id"))
    .values(tokens_used=Organisation.tokens_used + bindparam("used", type_=BigInteger),
            tokens_remaining=Organisation.tokens_remaining + bindparam("back", type_=BigInteger),
            tokens_leased=func.coalesce(Organisation.tokens_leased, 0) - bindparam("unlease", type_=BigInteger))
)
"""Built once, run with parameters (``org_id``, ``used``, ``back``, ``unlease``) for a whole group commit at a
time: the settlements of many requests in one ``executemany``. Unlimited organisations keep NULL (NULL + x
stays NULL)."""


def settle_params(org_id: int, reserved: int, used: int, leased: bool = False) -> dict[str, int] | None:
    """:data:`SETTLE`'s parameters for one request; None when there is nothing to settle. ``leased``: the
    reservation came out of a lease (``serving.security.leases``), which ``reserved`` (= used + what goes back)
    leaves."""
    if not reserved and not used:
        return None
    return {"org_id": org_id, "used": used, "back": reserved - used, "unlease": reserved if leased else 0}


def settle_update(org_id: int, reserved: int, used: int) -> Update:
    """The statement that gives back the unused part of a reservation and counts the real usage."""
    values: dict[str, Any] = {"tokens_used": Organisation.tokens_used + used}
    if reserved or used:
        # Unlimited organisations keep NULL (NULL + x stays NULL).
        values["tokens_remaining"] = Organisation.tokens_remaining + (reserved - used)
    return update(Organisation).where(Organisation.id == org_id).values(**values)


def _retry_after(rpm: int, previous: int, current: int, elapsed: float) -> int:
    """Seconds until the sliding estimate drops below ``rpm`` again (at least 1)."""
    if current >= rpm or previous == 0:
        wait = (1.0 - elapsed) * WINDOW_S  # this minute's own count is too high: wait for the next one
    else:
        # previous * (1 - e) + current < rpm  <=>  e > 1 - (rpm - current) / previous
        wait = (1.0 - (rpm - current) / previous - elapsed) * WINDOW_S
    return max(1, math.ceil(wait))
