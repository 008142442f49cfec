"""The group-committing record writer against a real SQLite file: every record lands, in few transactions."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import event

from serving.security.audit import AuditEntry, AuditStore
from serving.security.auth import KeyStore
from serving.security.quota import QuotaStore
from serving.security.recorder import RecordWriter, Settlement


def _entry(i: int, **extra) -> AuditEntry:
    return AuditEntry(request_id=f"req-{i}", method="POST", path="/v1/chat/completions", status=200,
                      latency_ms=1.0, prompt_tokens=3, completion_tokens=4, **extra)


def test_concurrent_records_all_land_in_fewer_transactions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sec.db'}"
    keys = KeyStore(url)
    org_id = keys.authenticate(keys.create("기관", token_quota=10_000)).org_id
    audit = AuditStore(url)
    assert QuotaStore(url).reserve(org_id, 200 * 50)  # the whole quota, held by the 200 requests
    commits = []
    event.listen(audit.engine, "commit", lambda conn: commits.append(1))
    writer = RecordWriter(audit.engine)
    start_thread = writer._start
    writer._start = lambda: None  # hold the writer back until all 200 requests have queued

    async def main() -> None:
        # Each request reserved 50 tokens and used 7: 43 go back to the organisation.
        pending = [asyncio.ensure_future(writer.record(_entry(i), Settlement(org_id, 50, 7))) for i in range(200)]
        await asyncio.sleep(0)
        start_thread()
        await asyncio.gather(*pending)

    asyncio.run(main())
    rows = audit.recent(500)
    assert sorted(r.request_id for r in rows) == sorted(f"req-{i}" for i in range(200))
    info = next(k for k in KeyStore(url).list())
    assert (info.tokens_used, info.tokens_remaining) == (200 * 7, 10_000 - 200 * 7)
    assert len(commits) == 1  # all 200 requests settled and audited in one transaction


def test_a_bad_record_fails_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sec.db'}"
    audit = AuditStore(url)
    writer = RecordWriter(audit.engine)

    async def main() -> list:
        bad = _entry(0)
        bad.pii_counts = {"phone": object()}  # not JSON: this row cannot be stored
        return await asyncio.gather(writer.record(bad, None), *[writer.record(_entry(i), None) for i in range(1, 20)],
                                    return_exceptions=True)

    outcomes = asyncio.run(main())
    assert isinstance(outcomes[0], Exception) and all(o is None for o in outcomes[1:])
    assert sorted(r.request_id for r in audit.recent(50)) == sorted(f"req-{i}" for i in range(1, 20))


def test_a_request_alone_commits_on_the_loop_and_yields_to_a_held_write_lock(tmp_path: Path) -> None:
    """``alone``: committed on the event loop's thread (the writer thread never starts); with SQLite's write
    lock held elsewhere (another replica), the record goes to the writer thread, which waits for the lock. The
    credits add up and the hash chain of rows from both paths verifies."""
    from serving.security.audit_chain import verify_chain
    from serving.storage.db import _sqlite_module

    # The server's own SQLite library: two SQLite libraries in one process (the standard library's and
    # pysqlite3's) do not see each other's locks; another replica is another process, which does.
    sqlite3 = _sqlite_module()

    db = tmp_path / "sec.db"
    url = f"sqlite:///{db}"
    keys = KeyStore(url)
    org_id = keys.authenticate(keys.create("기관", token_quota=1_000)).org_id
    audit = AuditStore(url)
    assert QuotaStore(url).reserve(org_id, 3 * 50)
    writer = RecordWriter(audit.engine)
    other_replica = sqlite3.connect(db, isolation_level=None)

    async def main() -> None:
        await writer.record(_entry(0), Settlement(org_id, 50, 7), alone=True)
        await writer.record(_entry(1), Settlement(org_id, 50, 7), alone=True)
        assert writer._thread is None  # both committed without the writer thread
        other_replica.execute("BEGIN IMMEDIATE")  # the write lock, held by "another replica"
        waiting = asyncio.ensure_future(writer.record(_entry(2), Settlement(org_id, 50, 7), alone=True))
        await asyncio.sleep(0)  # runs record() up to its wait: the inline commit could not take the lock
        assert writer._thread is not None and not waiting.done()
        assert "req-2" not in {r.request_id for r in audit.recent(10)}
        other_replica.execute("COMMIT")
        await waiting

    asyncio.run(main())
    other_replica.close()
    assert sorted(r.request_id for r in audit.recent(10)) == ["req-0", "req-1", "req-2"]
    info = next(k for k in KeyStore(url).list())
    assert (info.tokens_used, info.tokens_remaining) == (3 * 7, 1_000 - 3 * 7)
    report = verify_chain(audit.engine)
    assert report.ok and report.rows == 3, report.problem
