"""The audit log's hash chain: rows altered, inserted or deleted with plain SQL are caught by ``nexus-k audit
verify`` (SQLite and PostgreSQL), the chain stays whole with several writers at once, checkpoints are signed."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from nexus_k.cli import app
from nexus_k.core.errors import UserError
from serving.security.audit import AuditEntry
from serving.security.audit_chain import verify_chain
from serving.security.recorder import RecordWriter
from serving.storage.db import get_engine, make_engine
from tests.serving.conftest_pg import pg_db_url, postgres_url  # noqa: F401  (fixtures)

runner = CliRunner()


def _entry(i: int) -> AuditEntry:
    return AuditEntry(request_id=f"req-{i}", method="POST", path="/v1/chat/completions", status=200,
                      latency_ms=1.5 + i / 7, org_name="기관", end_user=f"민원인-{i}", client_ip="192.0.2.1",
                      prompt_tokens=i, completion_tokens=2 * i, pii_counts={"phone": i % 2}, resources=["file-1"])


def write_rows(url: str, n: int, start: int = 0, engine=None) -> None:  # type: ignore[no-untyped-def]
    """Commit ``n`` audit rows through the recorder (one batch after another, as the server does)."""
    writer = RecordWriter(engine or get_engine(url))

    async def main() -> None:
        await asyncio.gather(*[writer.record(_entry(i), None) for i in range(start, start + n)])

    asyncio.run(main())


def verify(url: str, *extra: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["audit", "verify", "--database-url", url, *extra])


def _sql(url: str, statement: str) -> None:
    with get_engine(url).begin() as conn:
        conn.execute(text(statement))


FORGED_COLUMNS = "created_at, request_id, method, path, status, prompt_tokens, completion_tokens, latency_ms"
FORGED_VALUES = "'2026-01-01 00:00:00', 'forged', 'POST', '/v1/chat/completions', 200, 1, 1, 1.0"


def _copy_row(url: str, row_id: int) -> dict:
    from sqlalchemy import select

    from serving.storage.db import AuditRecord

    with get_engine(url).connect() as conn:
        query = select(AuditRecord.__table__).where(AuditRecord.id == row_id)
        return dict(conn.execute(query).mappings().one())


def _restore(url: str, row: dict) -> None:
    from sqlalchemy import insert

    from serving.storage.db import AuditRecord

    with get_engine(url).begin() as conn:
        conn.execute(insert(AuditRecord).values(**row))


def run_all_tamperings(url: str) -> None:
    write_rows(url, 6)
    assert "intact: 6 rows" in verify(url).stdout

    before = _copy_row(url, 3)["completion_tokens"]
    _sql(url, "UPDATE audit_log SET completion_tokens = 999 WHERE id = 3")
    altered = verify(url)
    assert altered.exit_code == 1 and "row 3 was altered" in altered.output
    _sql(url, f"UPDATE audit_log SET completion_tokens = {before} WHERE id = 3")  # back as it was
    assert verify(url).exit_code == 0

    row4 = _copy_row(url, 4)
    _sql(url, "DELETE FROM audit_log WHERE id = 4")
    deleted = verify(url)
    assert deleted.exit_code == 1 and "rows between row 3 and row 5 were deleted" in deleted.output
    _restore(url, row4)
    assert verify(url).exit_code == 0

    row6 = _copy_row(url, 6)
    _sql(url, "DELETE FROM audit_log WHERE id = 6")
    cut = verify(url)
    assert cut.exit_code == 1 and "rows after row 5 were deleted" in cut.output
    _restore(url, row6)

    _sql(url, f"INSERT INTO audit_log (id, {FORGED_COLUMNS}) VALUES (100, {FORGED_VALUES})")
    inserted = verify(url)
    assert inserted.exit_code == 1 and "row 100 is not chained" in inserted.output
    _sql(url, "DELETE FROM audit_log WHERE id = 100")

    # A forger who knows the algorithm (not the checkpoint secret): a row between 2 and 3 with a valid digest.
    from serving.security.audit_chain import row_digest

    prev = _copy_row(url, 2)["digest"]
    forged = {**_copy_row(url, 2), "id": None, "request_id": "forged"}
    forged.pop("id")
    forged["digest"], forged["prev_digest"] = row_digest(prev, forged), prev
    rows = [_copy_row(url, i) for i in range(3, 7)]
    _sql(url, "DELETE FROM audit_log WHERE id >= 3")
    _restore(url, {**forged, "id": 3})
    for row in rows:
        _restore(url, {**row, "id": row["id"] + 1})
    forged_insert = verify(url)
    assert forged_insert.exit_code == 1 and "row 3 was inserted" in forged_insert.output, forged_insert.output


def test_sqlite_chain_catches_altered_inserted_deleted_rows(tmp_path: Path) -> None:
    run_all_tamperings(f"sqlite:///{tmp_path / 'audit.db'}")


@pytest.mark.postgres
def test_postgres_chain_catches_altered_inserted_deleted_rows(pg_db_url: str) -> None:  # noqa: F811
    run_all_tamperings(pg_db_url)


def concurrent_writers_keep_one_chain(url: str) -> None:
    """Four 'replicas' (own engine, own writer thread) commit at once: one unbroken chain, every row in it."""
    engines = [make_engine(url) for _ in range(4)]
    threads = [threading.Thread(target=write_rows, args=(url, 60, 100 * k, engines[k])) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = verify_chain(get_engine(url))
    assert report.ok, report.problem
    assert report.rows == 240


def test_sqlite_concurrent_writers(tmp_path: Path) -> None:
    concurrent_writers_keep_one_chain(f"sqlite:///{tmp_path / 'audit.db'}")


@pytest.mark.postgres
def test_postgres_concurrent_writers(pg_db_url: str) -> None:  # noqa: F811
    concurrent_writers_keep_one_chain(pg_db_url)


def test_rows_written_before_chaining_stay_outside_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    get_engine(url)
    _sql(url, f"INSERT INTO audit_log ({FORGED_COLUMNS}) VALUES ({FORGED_VALUES})")  # a pre-upgrade row
    write_rows(url, 3)
    result = verify(url)
    assert result.exit_code == 0 and "3 rows" in result.stdout and "1 older rows predate" in result.stdout


def test_checkpoint_catches_a_rewritten_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    write_rows(url, 4)
    no_secret = runner.invoke(app, ["audit", "checkpoint", "--database-url", url])
    assert isinstance(no_secret.exception, UserError) and "NEXUS_K_AUDIT_SECRET" in str(no_secret.exception)
    monkeypatch.setenv("NEXUS_K_AUDIT_SECRET", "s3cret")
    out = tmp_path / "checkpoints.jsonl"
    signed = runner.invoke(app, ["audit", "checkpoint", "--database-url", url, "--out", str(out)])
    assert signed.exit_code == 0, signed.output
    assert json.loads(out.read_text())["last_id"] == 4
    write_rows(url, 2, start=10)
    assert verify(url, "--checkpoint", str(out)).exit_code == 0

    # Cut the last rows and recompute the head: the chain alone looks intact, the checkpoint does not.
    _sql(url, "DELETE FROM audit_log WHERE id >= 4")
    _sql(url, "UPDATE audit_chain SET last_id = 3, last_digest = (SELECT digest FROM audit_log WHERE id = 3)")
    assert verify(url).exit_code == 0
    caught = verify(url, "--checkpoint", str(out))
    assert caught.exit_code == 1 and "row 4" in caught.output and "deleted" in caught.output

    monkeypatch.setenv("NEXUS_K_AUDIT_SECRET", "other")
    wrong = verify(url, "--checkpoint", str(out))
    assert wrong.exit_code == 1 and "HMAC" in wrong.output
