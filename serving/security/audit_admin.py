"""Keeping the audit log: purge past the retention period (the chain stays verifiable), export for auditors.

Dates are UTC calendar days. The purge and every export leave a row of their own in the chain, so the log
says who removed or took out what, and when.
"""

from __future__ import annotations

import csv
import getpass
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, select, update

from nexus_k.core.errors import UserError
from serving.security.audit_chain import append_rows, lock_chain, read_head, verify_chain
from serving.storage.db import AuditChainHead, AuditRecord, utcnow

EXPORT_FORMATS = ("csv", "jsonl")


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, time(), tzinfo=UTC)


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _admin_row(action: str) -> dict[str, Any]:
    """An audit row for an operator's action on the log itself (the CLI, not the API)."""
    return {"request_id": uuid.uuid4().hex, "method": "CLI", "path": action[:300], "status": 200,
            "latency_ms": 0.0, "end_user": _operator()}


def record_admin_action(engine: Engine, action: str) -> None:
    """Put an operator's command (key created, limits or PII guard changed, key revoked) in the chained log."""
    with engine.begin() as conn:
        append_rows(conn, [_admin_row(action)])


@dataclass
class PurgeResult:
    """What ``purge`` removed."""

    deleted: int
    anchor_id: int
    """The chain now starts after this row."""


def purge(engine: Engine, before: date, retention_days: int, today: date | None = None) -> PurgeResult:
    """Delete the audit rows written before ``before``; refuse inside the retention period or on a broken chain.

    The digest of the last row deleted becomes the chain's anchor, so ``verify`` still checks what is left.
    """
    today = today or utcnow().date()
    earliest = today - timedelta(days=retention_days)
    if before > earliest:
        raise UserError(f"refusing to purge: rows from {before} are inside the {retention_days}-day retention period "
                        f"(audit_retention_days); the latest --before allowed today is {earliest}")
    report = verify_chain(engine)
    if not report.ok:
        raise UserError(f"refusing to purge: the audit chain is broken at row {report.bad_id} ({report.problem}); "
                        "export the evidence first")
    cutoff = day_start(before)
    with engine.begin() as conn:
        lock_chain(conn)
        head = read_head(conn)
        anchor_id = head.anchor_id if head else 0
        last_gone = anchor_id
        if head is not None:
            first_kept = conn.execute(select(func.min(AuditRecord.id)).where(
                AuditRecord.id > anchor_id, AuditRecord.created_at >= cutoff)).scalar()
            # Only a prefix of the chain can go (rows in id order): up to the first row that must stay.
            last_gone = (first_kept - 1) if first_kept is not None else head.last_id
        deleted = conn.execute(delete(AuditRecord).where(AuditRecord.id <= anchor_id,
                                                         AuditRecord.created_at < cutoff)).rowcount
        if head is not None and last_gone > anchor_id:
            anchor = conn.execute(select(AuditRecord.id, AuditRecord.digest).where(
                AuditRecord.id <= last_gone).order_by(AuditRecord.id.desc()).limit(1)).first()
            if anchor is not None and anchor.id > anchor_id:
                deleted += conn.execute(delete(AuditRecord).where(AuditRecord.id > anchor_id,
                                                                  AuditRecord.id <= anchor.id)).rowcount
                conn.execute(update(AuditChainHead).where(AuditChainHead.id == 1).values(
                    anchor_id=anchor.id, anchor_digest=anchor.digest, anchor_at=utcnow()))
                anchor_id = anchor.id
        append_rows(conn, [_admin_row(f"nexus-k audit purge --before {before}: {deleted} rows deleted")])
    return PurgeResult(deleted, anchor_id)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value


def export(engine: Engine, start: date, end: date, fmt: str, out: Path, org: str | None = None,
           user: str | None = None) -> int:
    """Write the rows from ``start`` to ``end`` (both days included) to ``out`` as CSV or JSON lines; returns
    how many. Every column is written, digests included, so a copy can be checked against the chain."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    if end < start:
        raise UserError(f"--to {end} is before --from {start}")
    table = AuditRecord.__table__
    query = select(table).where(AuditRecord.created_at >= day_start(start),
                                AuditRecord.created_at < day_start(end + timedelta(days=1))).order_by(AuditRecord.id)
    if org is not None:
        query = query.where(AuditRecord.org_name == org)
    if user is not None:
        query = query.where(AuditRecord.end_user == user)
    columns = [c.name for c in table.columns]
    count = 0
    with engine.connect() as conn, out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(columns)
        for row in conn.execution_options(stream_results=True, yield_per=1000).execute(query).mappings():
            values = {name: _json_value(row[name]) for name in columns}
            if writer is not None:
                writer.writerow([json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else
                                 ("" if v is None else v) for v in values.values()])
            else:
                f.write(json.dumps(values, ensure_ascii=False) + "\n")
            count += 1
    filters = "".join(f" --{name} {value}" for name, value in (("org", org), ("user", user)) if value is not None)
    with engine.begin() as conn:
        append_rows(conn, [_admin_row(f"nexus-k audit export --from {start} --to {end}{filters}: {count} rows")])
    return count
