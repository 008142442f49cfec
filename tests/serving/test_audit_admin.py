"""Retention and export: purge refuses inside the retention period and keeps the chain verifiable; export
writes a period's rows (per organisation or user) as CSV or JSON lines."""

from __future__ import annotations

import asyncio
import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from nexus_k.cli import app
from nexus_k.core.errors import UserError
from serving.security.audit import AuditEntry, AuditStore
from serving.security.audit_chain import verify_chain
from serving.security.recorder import RecordWriter
from serving.storage.db import get_engine
from tests.serving.conftest_pg import pg_db_url, postgres_url  # noqa: F401  (fixtures)

runner = CliRunner()
NOW = datetime.now(UTC)
DAY = timedelta(days=1)


def write(url: str, *rows: tuple[datetime, str, str]) -> None:
    """Audit rows (time, organisation, end user) through the recorder, in this order."""
    writer = RecordWriter(get_engine(url))

    async def main() -> None:
        for i, (when, org, user) in enumerate(rows):
            await writer.record(AuditEntry(request_id=f"r{i}", method="POST", path="/v1/chat/completions",
                                           status=200, latency_ms=2.0, org_name=org, end_user=user,
                                           prompt_tokens=10, completion_tokens=5, created_at=when), None)

    asyncio.run(main())


def cli(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["audit", *args])


def purge_keeps_the_chain(url: str) -> None:
    write(url, (NOW - 1100 * DAY, "a", "u1"), (NOW - 900 * DAY, "a", "u2"), (NOW - 10 * DAY, "b", "u1"),
          (NOW, "a", "u1"))
    inside = cli("purge", "--before", str((NOW - 100 * DAY).date()), "--database-url", url)
    assert isinstance(inside.exception, UserError) and "retention" in str(inside.exception)
    assert len(AuditStore(url).recent(100)) == 4  # nothing deleted

    done = cli("purge", "--before", str((NOW - 800 * DAY).date()), "--database-url", url)
    assert done.exit_code == 0, done.output
    assert "deleted 2 audit rows" in done.stdout
    rows = AuditStore(url).recent(100)
    assert [r.request_id for r in rows][1:] == ["r3", "r2"]
    assert rows[0].method == "CLI" and "audit purge" in rows[0].path and rows[0].end_user  # the purge is on record
    report = verify_chain(get_engine(url))
    assert report.ok and report.rows == 3, report.problem

    with get_engine(url).begin() as conn:  # the first row left still chains from the anchor
        conn.execute(text("UPDATE audit_log SET org_name = 'x' WHERE request_id = 'r2'"))
    broken = cli("verify", "--database-url", url)
    assert broken.exit_code == 1 and "altered" in broken.output


def test_purge_sqlite(tmp_path: Path) -> None:
    purge_keeps_the_chain(f"sqlite:///{tmp_path / 'audit.db'}")


@pytest.mark.postgres
def test_purge_postgres(pg_db_url: str) -> None:  # noqa: F811
    purge_keeps_the_chain(pg_db_url)


def test_retention_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    write(url, (NOW - 40 * DAY, "a", "u"), (NOW, "a", "u"))
    monkeypatch.setenv("NEXUS_K_AUDIT_RETENTION_DAYS", "30")
    done = cli("purge", "--before", str((NOW - 31 * DAY).date()), "--database-url", url)
    assert done.exit_code == 0 and "deleted 1 audit rows" in done.stdout


def test_export_csv_and_jsonl_with_filters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    write(url, (NOW - 40 * DAY, "a", "u1"), (NOW - 2 * DAY, "a", "u1"), (NOW - 2 * DAY, "b", "u2"),
          (NOW - DAY, "a", "u2"), (NOW + 2 * DAY, "a", "u1"))
    start, end = str((NOW - 3 * DAY).date()), str((NOW - DAY).date())
    out = tmp_path / "a.jsonl"
    done = cli("export", "--from", start, "--to", end, "--format", "jsonl", "--org", "a", "--out", str(out),
               "--database-url", url)
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["request_id"], r["org_name"], r["end_user"]) for r in lines] == [("r1", "a", "u1"), ("r3", "a", "u2")]
    assert len(lines[0]["digest"]) == 64 and lines[0]["created_at"].endswith("+00:00")

    out_csv = tmp_path / "u2.csv"
    assert cli("export", "--from", start, "--to", end, "--format", "csv", "--user", "u2", "--out", str(out_csv),
               "--database-url", url).exit_code == 0
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert [(r["request_id"], r["org_name"]) for r in rows] == [("r2", "b"), ("r3", "a")]
    assert rows[0]["prompt_tokens"] == "10" and rows[0]["client_ip"] == ""
    exported = AuditStore(url).recent(1)[0]
    assert exported.method == "CLI" and "audit export" in exported.path and "--user u2: 2 rows" in exported.path
    assert verify_chain(get_engine(url)).ok

    bad = cli("export", "--from", end, "--to", start, "--out", str(out), "--database-url", url)
    assert isinstance(bad.exception, UserError)
