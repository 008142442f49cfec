"""Tamper evidence for the audit log: every row is hash-chained to the one before it.

``digest = SHA-256(prev_digest || canonical JSON of the row's content)``. The recorder appends rows inside its
group commit, under a lock that every replica takes (a transaction-level advisory lock on PostgreSQL; SQLite's
single writer lock), so the chain follows the id order whatever runs at once. ``verify`` walks the rows in id
order and names the first one that was altered, inserted or deleted; the head row (``audit_chain``) also
catches rows cut from the end. Someone with write access could recompute the whole chain: a checkpoint (an
HMAC over the head with a secret kept away from the database) kept elsewhere catches that too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Dialect, Engine, func, insert, select, text
from sqlalchemy.dialects import sqlite

from serving.storage.db import AuditChainHead, AuditRecord, utcnow

GENESIS = "0" * 64
"""The digest the first row of a fresh chain links to."""
CHAIN_LOCK = 727275
"""PostgreSQL advisory-lock key of the chain (727274 is table creation's)."""
CONTENT_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in AuditRecord.__table__.columns if c.name not in ("id", "digest", "prev_digest")
)
"""What a row's digest covers: every column but its id and the chain's own two."""
_SCALAR_DEFAULTS = {c.name: c.default.arg for c in AuditRecord.__table__.columns
                    if c.default is not None and c.default.is_scalar}
_DATETIME_COLUMNS = tuple(name for name in CONTENT_COLUMNS
                          if isinstance(AuditRecord.__table__.c[name].type, DateTime))
"""The content columns that hold dates (the only values :func:`_plain` changes)."""


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(timespec="microseconds")
    return value


def canonical(row: Mapping[str, Any]) -> bytes:
    """The row's content as the bytes its digest covers (the same whether read back from SQLite or PostgreSQL)."""
    # Empty columns are left out, so that a nullable column added later leaves old rows' digests as they were.
    data = {name: value for name in CONTENT_COLUMNS if (value := row.get(name)) is not None}
    for name in _DATETIME_COLUMNS:
        if name in data:
            data[name] = _plain(data[name])
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def row_digest(prev_digest: str, row: Mapping[str, Any]) -> str:
    """The chain digest of ``row`` following ``prev_digest``."""
    return hashlib.sha256(prev_digest.encode("ascii") + b"\n" + canonical(row)).hexdigest()


_LOCK_PG = text(f"SELECT pg_advisory_xact_lock({CHAIN_LOCK})")
# A write statement takes SQLite's one write lock (waiting for it); a read first would not.
_LOCK_SQLITE = text("UPDATE audit_chain SET id = id WHERE id = 1")
_READ_HEAD = text("SELECT last_id, last_digest FROM audit_chain WHERE id = 1")
_LOCK_AND_READ_SQLITE = text("UPDATE audit_chain SET id = id WHERE id = 1 RETURNING last_id, last_digest")
"""SQLite: the write lock and the head in one statement (one round trip less per group commit)."""
_MOVE_HEAD = text("UPDATE audit_chain SET last_id = :last_id, last_digest = :last_digest WHERE id = 1")
_INSERT_ROW = AuditRecord.__table__.insert()
"""Built once: the recorder commits with fixed statements and parameter dicts (cheap to execute)."""


def lock_chain(conn: Connection) -> None:
    """Make this transaction the chain's only writer until it ends (every replica goes through here)."""
    conn.execute(_LOCK_PG if conn.dialect.name == "postgresql" else _LOCK_SQLITE)


def read_head(conn: Connection) -> AuditChainHead | None:
    """The chain's head row, or None before the first chained row."""
    row = conn.execute(select(AuditChainHead.__table__).where(AuditChainHead.id == 1)).mappings().first()
    return AuditChainHead(**row) if row is not None else None


def append_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert audit rows (column -> value) at the end of the chain. Call inside the transaction that commits
    them; the lock is held from here to the commit, so keep what follows short."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        lock_chain(conn)
        head = conn.execute(_READ_HEAD).first()
    else:
        head = conn.execute(_LOCK_AND_READ_SQLITE).first()
        if head is None:
            lock_chain(conn)  # no head row yet to lock: take the write lock anyway (a harmless no-op UPDATE)
    if head is None:
        # Rows written before chaining began stay outside it, below the anchor.
        before = conn.execute(select(func.max(AuditRecord.id))).scalar() or 0
        conn.execute(insert(AuditChainHead).values(**_new_head(before)))
        prev, last_id = GENESIS, before
    else:
        last_id, prev = head
    now = utcnow()
    for given in rows:
        values = chained_values(given, prev, now)
        result = conn.execute(_INSERT_ROW, values)
        prev, last_id = values["digest"], result.inserted_primary_key[0]
    conn.execute(_MOVE_HEAD, {"last_id": last_id, "last_digest": prev})


def _new_head(before: int) -> dict[str, Any]:
    """The chain's head row when chaining begins: rows up to ``before`` (written earlier) stay below the anchor."""
    return {"id": 1, "last_id": before, "last_digest": GENESIS, "anchor_id": before, "anchor_digest": GENESIS}


def chained_values(given: Mapping[str, Any], prev: str, now: datetime) -> dict[str, Any]:
    """The column values of the row ``given`` appended after the digest ``prev``: its content (``now`` as its
    time unless it has one, the database's defaults filled in so that the digest covers them), ``prev_digest``
    and its ``digest``."""
    values = {name: given.get(name) for name in CONTENT_COLUMNS}
    values["created_at"] = values["created_at"] or now
    for name, default in _SCALAR_DEFAULTS.items():  # what the database would fill in, so the digest covers it
        if values[name] is None:
            values[name] = default
    values["prev_digest"], values["digest"] = prev, row_digest(prev, values)
    return values


SQLITE_NAMED = sqlite.dialect(paramstyle="named")
"""SQLite's SQL with ``:name`` parameters, which the ``sqlite3`` module takes with a dict."""


class SqliteAppender:
    """:func:`append_rows` for the recorder on SQLite, through the ``sqlite3`` cursor of the recorder's transaction:
    the same statements (compiled once from the same table definitions), the same values in the same storage
    form (each column's own SQLAlchemy bind processor: dates, JSON), the same digests; only SQLAlchemy's
    per-statement bookkeeping is skipped (a batch of one row: about 45 µs against 160 µs through
    ``append_rows``, measured in a loop on the development machine)."""

    def __init__(self, dialect: Dialect) -> None:
        table = AuditRecord.__table__
        columns = [*CONTENT_COLUMNS, "prev_digest", "digest"]
        self.insert_sql = str(_INSERT_ROW.compile(dialect=SQLITE_NAMED, column_keys=columns))
        self.insert_head_sql = str(AuditChainHead.__table__.insert().compile(dialect=SQLITE_NAMED,
                                                                           column_keys=list(_new_head(0))))
        self.processors = [(name, process, process(None)) for name in columns
                           if (process := table.c[name].type.dialect_impl(dialect).bind_processor(dialect))]
        """Each column's bind processor, and what it makes of None (JSON columns store ``null``, as through
        SQLAlchemy), computed once."""

    def append(self, cursor: Any, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` at the end of the chain (``cursor``: a ``sqlite3`` cursor inside the transaction
        that commits them; its first write takes SQLite's write lock, held to the commit)."""
        if not rows:
            return
        head = cursor.execute(_LOCK_AND_READ_SQLITE.text).fetchone()
        if head is None:
            cursor.execute(_LOCK_SQLITE.text)  # as in append_rows: the write lock, whatever the UPDATE matched
            before = cursor.execute(f"SELECT max(id) FROM {AuditRecord.__tablename__}").fetchone()[0] or 0
            cursor.execute(self.insert_head_sql, _new_head(before))
            prev, last_id = GENESIS, before
        else:
            last_id, prev = head
        now = utcnow()
        for given in rows:
            values = chained_values(given, prev, now)
            prev = values["digest"]
            for name, process, none_form in self.processors:
                value = values[name]
                values[name] = none_form if value is None else process(value)
            cursor.execute(self.insert_sql, values)
            last_id = cursor.lastrowid
        cursor.execute(_MOVE_HEAD.text, {"last_id": last_id, "last_digest": prev})


@dataclass
class ChainReport:
    """What ``verify`` found."""

    rows: int
    """Chained rows checked."""
    legacy_rows: int
    """Rows below the anchor still present (written before chaining began)."""
    last_id: int
    last_digest: str
    before_last: tuple[int, str] | None = None
    problem: str | None = None
    bad_id: int | None = None
    """The first row at fault (for a deletion: the row after the gap)."""

    @property
    def ok(self) -> bool:
        """Whether the chain is intact."""
        return self.problem is None


def _rows(conn: Connection, after_id: int) -> Iterator[dict[str, Any]]:
    query = select(AuditRecord.__table__).where(AuditRecord.id > after_id).order_by(AuditRecord.id)
    for row in conn.execution_options(stream_results=True, yield_per=1000).execute(query).mappings():
        yield dict(row)


def verify_chain(engine: Engine) -> ChainReport:
    """Recompute the chain from its anchor to its head; the report names the first row at fault."""
    with engine.connect() as conn:
        head = read_head(conn)
        anchor_id = head.anchor_id if head else 0
        legacy = conn.execute(select(func.count()).select_from(AuditRecord).where(AuditRecord.id <= anchor_id))
        report = ChainReport(0, legacy.scalar() or 0, anchor_id, head.anchor_digest if head else GENESIS)
        if head is None:
            chained = conn.execute(select(AuditRecord.id).where(AuditRecord.digest.is_not(None)).limit(1)).first()
            if chained is not None:
                report.problem, report.bad_id = "the chain's head row (table audit_chain) was deleted", chained[0]
            return report
        rows = _rows(conn, anchor_id)
        row = next(rows, None)
        while row is not None:
            following = next(rows, None)
            fault = _check(row, following, report)
            if fault is not None:
                report.problem, report.bad_id = fault
                return report
            report.rows += 1
            report.before_last = (report.last_id, report.last_digest)
            report.last_id, report.last_digest = row["id"], row["digest"]
            row = following
        if (report.last_id, report.last_digest) != (head.last_id, head.last_digest):
            report.problem, report.bad_id = _head_mismatch(conn, report, head)
    return report


def _head_mismatch(conn: Connection, report: ChainReport, head: AuditChainHead) -> tuple[str, int]:
    """Why the chain's last row is not the head's (rows cut from the end or added after it, or the head edited)."""
    if report.last_id < head.last_id:
        return f"rows after row {report.last_id} were deleted (the chain's head is row {head.last_id})", head.last_id
    if report.last_id > head.last_id:
        first = conn.execute(select(func.min(AuditRecord.id)).where(AuditRecord.id > head.last_id)).scalar()
        return (f"row {first} was inserted outside the server (the chain's head is row {head.last_id})",
                int(first or report.last_id))
    return f"the chain's head (table audit_chain) was altered: its digest for row {head.last_id} differs", head.last_id


def _check(row: dict[str, Any], following: dict[str, Any] | None, report: ChainReport) -> tuple[str, int] | None:
    """What is wrong with ``row`` after the rows checked so far, and the id of the row at fault; None if fine."""
    rid, prev = row["id"], report.last_digest
    if row["digest"] is None or row["prev_digest"] is None:
        return f"row {rid} is not chained: inserted outside the server", rid
    if row["prev_digest"] != prev:
        if report.before_last is not None and row["prev_digest"] == report.before_last[1]:
            return f"row {report.last_id} was inserted (row {rid} follows the row before it)", report.last_id
        if following is not None and following["prev_digest"] == prev:
            return f"row {rid} was inserted (the chain passes from row {report.last_id} to row {following['id']})", rid
        return (f"rows between row {report.last_id} and row {rid} were deleted (row {rid} does not follow row "
                f"{report.last_id})", rid)
    if row_digest(prev, row) != row["digest"]:
        if following is not None and following["prev_digest"] != row["digest"]:
            return f"row {rid} was inserted (its digest is not the one row {following['id']} follows)", rid
        return f"row {rid} was altered (its content no longer matches its digest)", rid
    return None


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement of the chain's head at one moment, to keep outside the database."""

    last_id: int
    digest: str
    created_at: str
    hmac: str

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(self.__dict__, sort_keys=True)


def _mac(secret: str, last_id: int, digest: str, created_at: str) -> str:
    message = f"nexus-k-audit-checkpoint:v1:{last_id}:{digest}:{created_at}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def make_checkpoint(report: ChainReport, secret: str) -> Checkpoint:
    """A checkpoint of the verified chain's head."""
    created = utcnow().isoformat(timespec="seconds")
    return Checkpoint(report.last_id, report.last_digest, created, _mac(secret, report.last_id, report.last_digest,
                                                                          created))


def check_checkpoint(engine: Engine, checkpoint: Mapping[str, Any], secret: str) -> str | None:
    """None when ``checkpoint`` is authentic and its row still carries its digest; else what is wrong."""
    try:
        last_id, digest, created = int(checkpoint["last_id"]), str(checkpoint["digest"]), str(checkpoint["created_at"])
        given = str(checkpoint["hmac"])
    except (KeyError, TypeError, ValueError):
        return "the checkpoint file is not a Nexus-K audit checkpoint"
    if not hmac.compare_digest(given, _mac(secret, last_id, digest, created)):
        return "the checkpoint's HMAC does not match (wrong secret, or the checkpoint was edited)"
    with engine.connect() as conn:
        head = read_head(conn)
        if head is not None and last_id <= head.anchor_id:
            if last_id == head.anchor_id and digest != head.anchor_digest:
                return f"row {last_id} (the purge anchor) differs from the checkpoint of {created}"
            return None  # purged since: the anchor took its place
        found = conn.execute(select(AuditRecord.digest).where(AuditRecord.id == last_id)).first()
    if found is None:
        return f"row {last_id}, the chain's head at the checkpoint of {created}, was deleted"
    if found[0] != digest:
        return f"the chain up to row {last_id} was rewritten since the checkpoint of {created}"
    return None
