"""The cheap security layer: cached key lookups with bounded revocation, rate slots counted in batches and
credits leased in blocks per replica; time is driven by injected clocks, never by sleeping."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event, text

from serving.config import ServerSettings
from serving.security.auth import KeyCache, KeyStore
from serving.security.leases import CreditLeases, RateSlots
from serving.security.middleware import SecurityMiddleware
from serving.security.quota import SETTLE, QuotaStore, settle_params
from serving.storage.db import get_engine

T0 = 1_800_000_000.0  # a minute boundary


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _ok_app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    """A trivial route behind the middleware: reads the body, answers 200."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps({"ok": True}).encode()})


def _middleware(url: str, clock: Clock, **settings) -> SecurityMiddleware:  # type: ignore[no-untyped-def]
    return SecurityMiddleware(_ok_app, ServerSettings(database_url=url, **settings), frozenset(), clock=clock)


def _statuses(app: SecurityMiddleware, key: str, count: int = 1) -> list[int]:
    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            return [(await client.post("/v1/chat/completions", json={})).status_code for _ in range(count)]

    return asyncio.run(run())


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'security.db'}"


def _key_lookups(url: str) -> list[str]:
    """Every statement that reads the keys table from now on."""
    seen: list[str] = []
    event.listen(get_engine(url), "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: seen.append(statement) if "api_keys" in statement else None)
    return seen


def test_revocation_by_another_replica_takes_effect_within_the_version_check(url: str) -> None:
    clock = Clock()
    app = _middleware(url, clock, key_cache_ttl_s=2.0, key_version_check_s=0.25)
    key = KeyStore(url).create("a", rpm=1000, token_quota=10**6, pii_guard="mask")
    lookups = _key_lookups(url)
    assert _statuses(app, key, 5) == [200] * 5
    assert len(lookups) == 1  # one database lookup, then the cache
    # Another replica revokes: only the shared keys_version counter tells this one.
    KeyStore(url, notify_local=False).revoke(key[:12])
    clock.now += 0.1
    assert _statuses(app, key) == [200]  # inside the documented bound the cached key may still pass
    clock.now += 0.15  # the bound (key_version_check_s) has passed: the counter is re-read, the cache dropped
    assert _statuses(app, key, 2) == [401, 401]


def test_revocation_in_this_process_takes_effect_at_once(url: str) -> None:
    app = _middleware(url, Clock())
    store = KeyStore(url)
    key = store.create("a")
    assert _statuses(app, key) == [200]
    store.revoke(key[:12])
    assert _statuses(app, key) == [401]


def test_a_change_written_by_hand_expires_with_the_ttl(url: str) -> None:
    clock = Clock()
    app = _middleware(url, clock, key_cache_ttl_s=2.0, key_version_check_s=0.25)
    key = KeyStore(url).create("a")
    assert _statuses(app, key) == [200]
    with get_engine(url).begin() as conn:  # no keys_version bump: only the TTL bounds this
        conn.execute(text("UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP"))
    clock.now += 1.0
    assert _statuses(app, key) == [200]
    clock.now += 1.0
    assert _statuses(app, key) == [401]


def test_limits_changed_with_keys_update_reach_other_replicas(url: str) -> None:
    clock = Clock()
    app = _middleware(url, clock)
    key = KeyStore(url).create("a")
    assert _statuses(app, key) == [200]
    KeyStore(url, notify_local=False).update("a", pii_guard="block")
    clock.now += 0.25
    assert app.keys.authenticate(key).pii_guard == "block"


def test_no_presented_token_can_name_an_organisation_cache_entry(url: str) -> None:
    keys = KeyStore(url, cache=KeyCache(clock=Clock()))
    KeyStore(url).create("기관")
    assert keys.principal_for_org("기관") is not None  # cached as the single-sign-on principal
    assert keys.cached_key("org:기관") is None
    assert keys.authenticate("org:기관") is None


def test_rate_slots_in_batches_never_exceed_rpm_across_replicas(url: str) -> None:
    KeyStore(url).create("a", rpm=100)
    clock = Clock(T0 + 1)
    replicas = [RateSlots(QuotaStore(url), batch_fraction=0.3, clock=clock) for _ in range(3)]
    statements = []
    event.listen(get_engine(url), "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: statements.append(statement))
    granted = sum(replicas[i % 3].acquire(1, 100).allowed for i in range(60))
    assert granted == 60
    assert len(statements) < 60  # most requests never reached the database
    granted += sum(replicas[i % 3].acquire(1, 100).allowed for i in range(140))
    assert granted <= 100
    assert granted >= 100 - 3 * 30  # at most one batch per replica left unspent
    clock.now += 60  # 1 s into the next minute the previous one still weighs 59/60, sliding as before
    assert sum(replicas[0].acquire(1, 100).allowed for _ in range(50)) <= 100 - math.floor(granted * 59 / 60)


def test_rate_batches_are_single_slots_for_a_small_rpm(url: str) -> None:
    KeyStore(url).create("a", rpm=10)
    clock = Clock(T0 + 5)
    replicas = [RateSlots(QuotaStore(url), batch_fraction=0.1, clock=clock) for _ in range(2)]
    # 10 x 0.1 is one slot a batch: every slot counted is spent, the count is exact whoever asks.
    assert sum(replicas[i % 2].acquire(1, 10).allowed for i in range(24)) == 10


def test_credit_leases_never_overspend_and_come_back_when_idle(url: str) -> None:
    store = KeyStore(url)
    store.create("a", token_quota=1000)
    quota = QuotaStore(url)
    clock = Clock()
    replicas = [CreditLeases(quota, fraction=0.2, idle_s=2.0, clock=clock) for _ in range(2)]
    statements = []
    event.listen(get_engine(url), "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: statements.append(statement))
    requests = []
    for i in range(60):  # all 60 in flight at once, alternating between the replicas, each reserving 30
        lease = replicas[i % 2]
        lease.begin(1)
        ok = lease.try_local(1, 30) or lease.reserve(1, 30)
        requests.append((lease, 30 if ok else 0))
        if i == 19:  # the first 20 all fit: most came from a lease, not the database
            assert len([st for st in statements if st.startswith("UPDATE organisations")]) <= 10
        assert quota.remaining(1) >= 0
    served = sum(1 for _, reserved in requests if reserved)
    assert 30 * served <= 1000  # never more reserved than the organisation has
    assert served >= (1000 - 2 * 200) // 30  # refused only while the other replica's lease held the rest
    for lease, reserved in requests:  # each used 10 of its 30; settled as the middleware settles
        used = 10 if reserved else 0
        back = lease.end(1, reserved, used)
        if params := settle_params(1, used + back, used, leased=True):
            with get_engine(url).begin() as conn:
                conn.execute(SETTLE, params)
    info = store.list()[0]
    assert info.tokens_used == 10 * served
    assert info.tokens_remaining == 1000 - 10 * served  # what processes still hold counts as the organisation's
    held = replicas[0].held(1) + replicas[1].held(1)
    assert quota.remaining(1) == 1000 - 10 * served - held
    clock.now += 1.9
    for lease in replicas:
        lease.return_idle()
    assert quota.remaining(1) == 1000 - 10 * served - held  # idle for less than idle_s: the stock stays
    clock.now += 0.1
    for lease in replicas:
        lease.return_idle()
    assert replicas[0].held(1) == replicas[1].held(1) == 0
    assert quota.remaining(1) == 1000 - 10 * served  # idle for idle_s: every lease went back


def test_concurrent_leases_in_one_process_never_refuse_while_credits_are_left(url: str) -> None:
    """Found by the 64-client bench (429 insufficient_quota with 10^12 credits left): requests leasing at the
    same moment each took a tenth of the same stale "left", so ten of them drained the organisation and the
    next was refused. Here 16 threads lease at once (a barrier holds each at the database until all have
    sized their lease)."""
    import threading

    store = KeyStore(url)
    store.create("a", token_quota=1_000_000)
    threads_n = 16
    barrier = threading.Barrier(threads_n)

    class AllAtOnce(QuotaStore):
        holding = False

        def lease(self, org_id: int, tokens: int) -> int | None:
            if self.holding:  # the first round only: a retry after it goes straight to the database
                barrier.wait(timeout=60)
                self.holding = False
            return super().lease(org_id, tokens)

    quota = AllAtOnce(url)
    leases = CreditLeases(quota, fraction=0.1, idle_s=0)
    leases.begin(1)
    assert leases.reserve(1, 100)  # the first lease is the request's own: the process learns what is left
    quota.holding = True
    results: list[bool] = []

    def one() -> None:
        leases.begin(1)
        results.append(leases.try_local(1, 100) or leases.reserve(1, 100))

    workers = [threading.Thread(target=one) for _ in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert results == [True] * threads_n
    assert quota.remaining(1) > 0 and quota.remaining(1) + leases.held(1) == 1_000_000 - 100 * (threads_n + 1)


def test_an_idle_process_keeps_its_stock_and_returns_it_at_exit(url: str) -> None:
    store = KeyStore(url)
    store.create("a", token_quota=100_000)
    quota = QuotaStore(url)
    leases = CreditLeases(quota, fraction=0.1, idle_s=3600, clock=Clock())
    statements = []
    event.listen(get_engine(url), "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: statements.append(statement))
    for _ in range(20):  # one request at a time, as a single client sends them
        leases.begin(1)
        assert leases.try_local(1, 50) or leases.reserve(1, 50)
        back = leases.end(1, 50, 20)
        if params := settle_params(1, 20 + back, 20, leased=True):
            with get_engine(url).begin() as conn:
                conn.execute(SETTLE, params)
    leased = [st for st in statements if "tokens_remaining >=" in st]
    assert len(leased) == 2  # the first lease is the request's own; the second, 10 % of what was left, lasts
    assert store.list()[0].tokens_remaining == 100_000 - 20 * 20
    assert quota.remaining(1) < 100_000 - 20 * 20
    leases.close()  # what exit does: the stock goes back
    assert quota.remaining(1) == 100_000 - 20 * 20
