"""Batches and their lines in the server's database, shared by every replica.

A line is claimed by one runner with a single ``UPDATE`` (on PostgreSQL over ``SELECT ... FOR UPDATE SKIP
LOCKED``, so replicas never wait on each other's rows), its result is committed as soon as it finishes, and a
claim whose runner stopped renewing it (killed) goes stale and is claimed again. The output is built from
the lines' rows, so each line appears in it exactly once whatever crashed when.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    Index,
    Integer,
    String,
    UniqueConstraint,
    and_,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, aliased, mapped_column

from serving.storage.db import Base, ensure_tables, get_sessionmaker
from serving.storage.files import FileRecord

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
"""Statuses of a batch that still uses its input file."""
LINE_PAGE = 500


class BatchRecord(Base):
    """One batch: its input, its status and timestamps (Unix seconds), and who is validating or finalizing it."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_org_seq", "org_id", "seq"), Index("ix_batches_status", "status"))

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(64), index=True)
    completion_window: Mapped[str] = mapped_column(String(8), default="24h")
    status: Mapped[str] = mapped_column(String(16))
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    errors: Mapped[list | None] = mapped_column(JSON, nullable=True)
    output_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    in_progress_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    finalizing_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    completed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    failed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expired_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cancelling_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The runner validating or finalizing it (lines have their own claims)."""
    claimed_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class BatchLine(Base):
    """One request of a batch: its body, its state (pending, running, done, failed) and its result."""

    __tablename__ = "batch_lines"
    __table_args__ = (UniqueConstraint("batch_id", "line_no"), Index("ix_batch_lines_state", "batch_id", "state"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(64))
    line_no: Mapped[int] = mapped_column(Integer)
    """1-based line number in the input file."""
    custom_id: Mapped[str] = mapped_column(String(512))
    body: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(8), default="pending")
    response: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    """``{"status_code", "request_id", "body"}`` of the finished request."""
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_at: Mapped[float | None] = mapped_column(Float, nullable=True)


def new_batch_id() -> str:
    """An OpenAI-style batch id: ``batch_`` and 24 hex digits."""
    return f"batch_{uuid.uuid4().hex[:24]}"


def _owned(query: Any, org_id: int | None) -> Any:
    return query.where(BatchRecord.org_id.is_(None) if org_id is None else BatchRecord.org_id == org_id)


class BatchStore:
    """Batch rows and line claims (blocking calls: run them in a worker thread)."""

    def __init__(self, database_url: str) -> None:
        ensure_tables(database_url)
        self.sessions = get_sessionmaker(database_url)
        self.dialect = self.sessions.kw["bind"].dialect.name

    # ------------------------------------------------------------------------------------------- the API

    def create(self, org_id: int | None, endpoint: str, input_file_id: str, metadata: dict | None) -> BatchRecord:
        """A new batch, ``validating``, which a runner will pick up."""
        now = int(time.time())
        record = BatchRecord(id=new_batch_id(), org_id=org_id, endpoint=endpoint, input_file_id=input_file_id,
                             status="validating", metadata_=metadata, created_at=now, expires_at=now + 86_400,
                             total=0, completed=0, failed=0)
        with self.sessions.begin() as s:
            s.add(record)
        return record

    def get(self, batch_id: str, org_id: int | None) -> BatchRecord | None:
        """The batch if it exists and belongs to ``org_id``."""
        with self.sessions() as s:
            return s.scalar(_owned(select(BatchRecord).where(BatchRecord.id == batch_id), org_id))

    def page(self, org_id: int | None, limit: int, after: str | None) -> tuple[list[BatchRecord], bool]:
        """Up to ``limit`` batches of ``org_id``, newest first, after the batch ``after``; and whether more follow."""
        query = _owned(select(BatchRecord), org_id)
        with self.sessions() as s:
            if after is not None:
                cursor = s.scalar(_owned(select(BatchRecord.seq).where(BatchRecord.id == after), org_id))
                if cursor is not None:
                    query = query.where(BatchRecord.seq < cursor)
            rows = list(s.scalars(query.order_by(BatchRecord.seq.desc()).limit(limit + 1)))
        return rows[:limit], len(rows) > limit

    def counts(self, batch_id: str) -> dict[str, int]:
        """How many of the batch's lines are in each state."""
        with self.sessions() as s:
            rows = s.execute(select(BatchLine.state, func.count()).where(BatchLine.batch_id == batch_id)
                             .group_by(BatchLine.state))
            return {state: int(n) for state, n in rows}

    def cancel(self, batch_id: str, org_id: int | None) -> BatchRecord | None:
        """Ask for the batch to stop (``cancelling``; a runner finishes the cancel); the batch as it is now."""
        with self.sessions.begin() as s:
            s.execute(_owned(update(BatchRecord).where(BatchRecord.id == batch_id,
                                                       BatchRecord.status.in_(("validating", "in_progress"))),
                             org_id).values(status="cancelling", cancelling_at=int(time.time())))
        return self.get(batch_id, org_id)

    def file_in_use(self, file_id: str) -> bool:
        """Whether a batch that has not ended reads ``file_id``."""
        with self.sessions() as s:
            return s.scalar(select(exists().where(BatchRecord.input_file_id == file_id,
                                                  BatchRecord.status.in_(ACTIVE)))) or False

    # ------------------------------------------------------------------------------------------ the runner

    def claim_batch(self, runner: str, statuses: tuple[str, ...], stale_s: float) -> BatchRecord | None:
        """Claim one batch in ``statuses`` that no live runner holds (to validate or finalize it)."""
        now = time.time()
        free = or_(BatchRecord.claimed_by.is_(None), BatchRecord.claimed_by == runner,
                   BatchRecord.claimed_at < now - stale_s)
        with self.sessions() as s:
            candidates = list(s.scalars(select(BatchRecord.id).where(BatchRecord.status.in_(statuses), free)
                                        .order_by(BatchRecord.seq).limit(8)))
        for batch_id in candidates:
            with self.sessions.begin() as s:
                claimed = s.execute(update(BatchRecord).where(BatchRecord.id == batch_id,
                                                              BatchRecord.status.in_(statuses), free)
                                    .values(claimed_by=runner, claimed_at=now)).rowcount
            if claimed:
                return self.get_any(batch_id)
        return None

    def get_any(self, batch_id: str) -> BatchRecord | None:
        """The batch whoever owns it (runner use)."""
        with self.sessions() as s:
            return s.scalar(select(BatchRecord).where(BatchRecord.id == batch_id))

    def renew_batch(self, batch_id: str, runner: str) -> None:
        """Keep this runner's claim on a batch it is validating or finalizing fresh."""
        with self.sessions.begin() as s:
            s.execute(update(BatchRecord).where(BatchRecord.id == batch_id, BatchRecord.claimed_by == runner)
                      .values(claimed_at=time.time()))

    def fail(self, batch_id: str, errors: list[dict[str, Any]]) -> None:
        """The batch failed validation: ``failed`` with ``errors``; nothing of it ran."""
        with self.sessions.begin() as s:
            s.execute(update(BatchRecord).where(BatchRecord.id == batch_id, BatchRecord.status == "validating")
                      .values(status="failed", failed_at=int(time.time()), errors=errors, claimed_by=None))

    def clear_lines(self, batch_id: str) -> None:
        """Drop the lines of an interrupted validation."""
        with self.sessions.begin() as s:
            s.execute(BatchLine.__table__.delete().where(BatchLine.batch_id == batch_id))

    def add_lines(self, batch_id: str, lines: list[tuple[int, str, dict]]) -> None:
        """Insert validated lines ``(line_no, custom_id, body)``, pending."""
        with self.sessions.begin() as s:
            s.execute(BatchLine.__table__.insert(), [
                {"batch_id": batch_id, "line_no": n, "custom_id": cid, "body": body, "state": "pending"}
                for n, cid, body in lines])

    def start(self, batch_id: str, runner: str, total: int) -> None:
        """Validation done: ``in_progress`` (unless it was cancelled meanwhile)."""
        with self.sessions.begin() as s:
            s.execute(update(BatchRecord).where(BatchRecord.id == batch_id, BatchRecord.claimed_by == runner)
                      .values(total=total, claimed_by=None))
            s.execute(update(BatchRecord).where(BatchRecord.id == batch_id, BatchRecord.status == "validating")
                      .values(status="in_progress", in_progress_at=int(time.time())))

    def claim_lines(self, runner: str, n: int, stale_s: float) -> list[BatchLine]:
        """Claim up to ``n`` lines of running batches: pending ones, or running ones whose runner went silent."""
        with self.sessions() as s:  # a read first: an idle server takes no write lock every poll
            if s.scalar(select(BatchRecord.seq).where(BatchRecord.status == "in_progress").limit(1)) is None:
                return []
        now = time.time()

        def claimable(line: Any) -> Any:  # never this runner's own lines: they are still in flight here
            return or_(line.state == "pending", and_(line.state == "running", line.claimed_at < now - stale_s,
                                                     line.claimed_by != runner))

        candidate = aliased(BatchLine)  # its own name: the subquery must not correlate with the updated table
        pick = (select(candidate.id).join(BatchRecord, BatchRecord.id == candidate.batch_id)
                .where(BatchRecord.status == "in_progress", claimable(candidate))
                .order_by(BatchRecord.seq, candidate.line_no).limit(n))
        if self.dialect == "postgresql":
            # A CTE runs once; as an IN (subquery) PostgreSQL may rescan it and, skipping locks, claim more.
            picked = pick.with_for_update(skip_locked=True, of=candidate).cte("picked")
            chosen = BatchLine.id == picked.c.id
        else:  # SQLite: one UPDATE holds the database's write lock, so no other process claims meanwhile
            chosen = BatchLine.id.in_(pick.scalar_subquery())
        statement = (update(BatchLine).where(chosen, claimable(BatchLine))
                     .values(state="running", claimed_by=runner, claimed_at=now)
                     .returning(BatchLine.id, BatchLine.batch_id, BatchLine.line_no, BatchLine.custom_id,
                                BatchLine.body))
        with self.sessions.begin() as s:
            rows = s.execute(statement.execution_options(synchronize_session=False)).all()
        return [BatchLine(id=r.id, batch_id=r.batch_id, line_no=r.line_no, custom_id=r.custom_id, body=r.body)
                for r in sorted(rows, key=lambda r: r.line_no)]

    def renew_lines(self, runner: str, line_ids: list[int]) -> None:
        """Keep this runner's claims on the lines it is running fresh."""
        if not line_ids:
            return
        with self.sessions.begin() as s:
            s.execute(update(BatchLine).where(BatchLine.id.in_(line_ids), BatchLine.claimed_by == runner,
                                              BatchLine.state == "running").values(claimed_at=time.time()))

    def finish_line(self, line_id: int, runner: str, ok: bool, response: dict | None, error: dict | None) -> bool:
        """Record a line's result if this runner still holds it; False when another took it over."""
        with self.sessions.begin() as s:
            done = s.execute(update(BatchLine).where(BatchLine.id == line_id, BatchLine.claimed_by == runner,
                                                     BatchLine.state == "running")
                             .values(state="done" if ok else "failed", response=response, error=error)).rowcount
        return bool(done)

    def release_line(self, line_id: int, runner: str) -> None:
        """Give a claimed line back (the server is stopping): pending again."""
        with self.sessions.begin() as s:
            s.execute(update(BatchLine).where(BatchLine.id == line_id, BatchLine.claimed_by == runner,
                                              BatchLine.state == "running")
                      .values(state="pending", claimed_by=None, claimed_at=None))

    def to_finalize(self) -> list[str]:
        """Running batches none of whose lines is pending or running: move them to ``finalizing``."""
        open_lines = exists().where(BatchLine.batch_id == BatchRecord.id, BatchLine.state.in_(("pending", "running")))
        with self.sessions.begin() as s:
            ids = list(s.scalars(select(BatchRecord.id).where(BatchRecord.status == "in_progress", ~open_lines)))
            for batch_id in ids:
                s.execute(update(BatchRecord).where(BatchRecord.id == batch_id, BatchRecord.status == "in_progress")
                          .values(status="finalizing", finalizing_at=int(time.time())))
        return ids

    def expire_due(self) -> None:
        """Running batches past their completion window stop: ``cancelling``, to end ``expired``."""
        now = int(time.time())
        with self.sessions.begin() as s:
            s.execute(update(BatchRecord).where(BatchRecord.status == "in_progress", BatchRecord.expires_at < now)
                      .values(status="cancelling", expired_at=now))

    def lines_running(self, batch_id: str, stale_s: float) -> bool:
        """Whether some live runner is still running a line of the batch."""
        with self.sessions() as s:
            return s.scalar(select(exists().where(BatchLine.batch_id == batch_id, BatchLine.state == "running",
                                                  BatchLine.claimed_at >= time.time() - stale_s))) or False

    def results(self, batch_id: str, state: str) -> Iterator[BatchLine]:
        """The batch's lines in ``state`` (done or failed) in line order, a page at a time (bounded memory)."""
        last = 0
        while True:
            with self.sessions() as s:
                page = list(s.scalars(select(BatchLine).where(BatchLine.batch_id == batch_id,
                                                              BatchLine.line_no > last, BatchLine.state == state)
                                      .order_by(BatchLine.line_no).limit(LINE_PAGE)))
            yield from page
            if len(page) < LINE_PAGE:
                return
            last = page[-1].line_no

    def complete(self, batch_id: str, runner: str, status: str, files: list[FileRecord],
                 output_file_id: str | None, error_file_id: str | None, counts: dict[str, int]) -> bool:
        """Record the output files and the final status in one transaction (if this runner still holds it)."""
        now = int(time.time())
        stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at"}[status]
        with self.sessions.begin() as s:
            moved = s.execute(update(BatchRecord).where(BatchRecord.id == batch_id, BatchRecord.claimed_by == runner,
                                                        BatchRecord.status.in_(("finalizing", "cancelling")))
                              .values(status=status, output_file_id=output_file_id, error_file_id=error_file_id,
                                      completed=counts.get("done", 0), failed=counts.get("failed", 0),
                                      claimed_by=None, **{stamp: now})).rowcount
            if moved:
                s.add_all(files)
        return bool(moved)


@lru_cache(maxsize=8)
def batch_store(database_url: str) -> BatchStore:
    """The process's batch store for this database."""
    return BatchStore(database_url)
