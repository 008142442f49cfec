"""Rate windows and credits: the arithmetic, and exact totals under several processes at once (SQLite)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from serving.security.auth import KeyStore
from serving.security.quota import QuotaStore, _retry_after

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


def test_sliding_window_counts_the_previous_minute_by_its_overlap(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    KeyStore(url).create("a", rpm=10)
    q = QuotaStore(url)
    assert all(q.acquire_rate(1, 10, now=T0 + 1).allowed for _ in range(10))
    refused = q.acquire_rate(1, 10, now=T0 + 1)
    assert not refused.allowed and refused.retry_after_s == 59
    # Half-way through the next minute half of the previous minute still counts: 5 more fit.
    assert [q.acquire_rate(1, 10, now=T0 + 90).allowed for _ in range(6)] == [True] * 5 + [False]
    # Two minutes later nothing of the first minute counts.
    assert all(q.acquire_rate(1, 10, now=T0 + 185).allowed for _ in range(10))


def test_retry_after_waits_for_the_overlap_to_shrink() -> None:
    assert _retry_after(10, previous=0, current=10, elapsed=0.25) == 45
    # 10 * (1 - e) + 5 < 10 needs e > 0.5: at e = 0.25 that is 15 s away.
    assert _retry_after(10, previous=10, current=5, elapsed=0.25) == 15
    assert _retry_after(10, previous=10, current=5, elapsed=0.4999) >= 1


def spend(url: str, org_id: int, attempts: int, reserve: int, cost: int) -> int:
    """Worker: reserve then settle ``cost`` tokens ``attempts`` times; how many went through."""
    q = QuotaStore(url)
    done = 0
    for _ in range(attempts):
        if q.reserve(org_id, reserve):
            q.settle(org_id, reserve, cost)
            done += 1
    return done


def count_requests(url: str, org_id: int, attempts: int, rpm: int, now: float) -> int:
    """Worker: take ``attempts`` rate slots at the same instant; how many were granted."""
    q = QuotaStore(url)
    return sum(q.acquire_rate(org_id, rpm, now=now).allowed for _ in range(attempts))


def check_concurrent_accounting(url: str, workers: int = 3) -> None:
    """Credits and rate slots hammered by ``workers`` processes add up exactly."""
    store = KeyStore(url)
    store.create("credits", token_quota=400)
    store.create("rate", rpm=20)
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        spent = sum(pool.starmap(spend, [(url, 1, 30, 30, 10)] * workers))
        granted = sum(pool.starmap(count_requests, [(url, 2, 15, 20, T0 + 5)] * workers))
    credits = next(k for k in store.list() if k.org == "credits")
    assert credits.tokens_used == 10 * spent
    assert credits.tokens_remaining == 400 - 10 * spent
    assert credits.tokens_remaining >= 0
    assert 10 * spent > 400 - 30 * workers  # it stopped only because the credits ran out
    assert granted == 20


def test_concurrent_processes_sqlite(tmp_path: Path) -> None:
    check_concurrent_accounting(f"sqlite:///{tmp_path / 'q.db'}")


@pytest.mark.parametrize("bad", [0, -5])
def test_invalid_limits_are_user_errors(tmp_path: Path, bad: int) -> None:
    from nexus_k.core.errors import UserError

    with pytest.raises(UserError, match="--rpm"):
        KeyStore(f"sqlite:///{tmp_path / 'q.db'}").create("a", rpm=bad)
