"""Uploaded and generated files: metadata rows in the server's database, bytes under ``data_dir/files``.

Every lookup is scoped to the owning organisation (None when the server runs without keys), so another
organisation's file is indistinguishable from one that does not exist.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from serving.storage.db import Base, ensure_tables, get_sessionmaker, utcnow


class FileRecord(Base):
    """One file: who owns it, what it is for, and where its bytes are."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_org_seq", "org_id", "seq"),)

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    """Insertion order (lists are ordered and paged by it)."""
    id: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The organisation whose key uploaded it, or whose batch wrote it (None without keys)."""
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    path: Mapped[str] = mapped_column(String(512))
    """Where the bytes are, relative to the server's ``data_dir``."""


def new_file_id() -> str:
    """An OpenAI-style file id: ``file-`` and 24 hex digits."""
    return f"file-{uuid.uuid4().hex[:24]}"


def _owned(query: Any, org_id: int | None) -> Any:
    return query.where(FileRecord.org_id.is_(None) if org_id is None else FileRecord.org_id == org_id)


@dataclass
class PendingFile:
    """A file being written: its id, its final place and the ``.part`` file its bytes go to first."""

    id: str
    relative: str
    final: Path
    partial: Path


class FileStore:
    """Files on disk and in the database (blocking calls: run them in a worker thread)."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        ensure_tables(database_url)
        self.sessions = get_sessionmaker(database_url)
        self.data_dir = Path(data_dir).expanduser()

    def begin(self) -> PendingFile:
        """A new file id and the ``.part`` path to stream its bytes to (made visible by :meth:`commit`)."""
        file_id = new_file_id()
        relative = f"files/{file_id[-2:]}/{file_id}"
        final = self.data_dir / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        return PendingFile(file_id, relative, final, final.with_name(file_id + ".part"))

    def settle(self, pending: PendingFile, org_id: int | None, filename: str, purpose: str) -> FileRecord:
        """Move the written bytes into place; the row to record (the caller adds it in its transaction)."""
        size = pending.partial.stat().st_size
        os.replace(pending.partial, pending.final)
        return FileRecord(id=pending.id, org_id=org_id, filename=filename[:512], purpose=purpose, bytes=size,
                          path=pending.relative, created_at=utcnow())

    def commit(self, pending: PendingFile, org_id: int | None, filename: str, purpose: str) -> FileRecord:
        """Move the written bytes into place and record the file."""
        record = self.settle(pending, org_id, filename, purpose)
        with self.sessions.begin() as s:
            s.add(record)
        return record

    def discard(self, pending: PendingFile) -> None:
        """Remove a half-written upload."""
        pending.partial.unlink(missing_ok=True)

    def write(self, org_id: int | None, filename: str, purpose: str, lines: Iterable[bytes]) -> FileRecord:
        """A new file made of ``lines`` (each written as given): its row, not yet recorded."""
        pending = self.begin()
        try:
            with pending.partial.open("wb") as out:
                for line in lines:
                    out.write(line)
                out.flush()
                os.fsync(out.fileno())
            return self.settle(pending, org_id, filename, purpose)
        except BaseException:
            self.discard(pending)
            raise

    def get(self, file_id: str, org_id: int | None) -> FileRecord | None:
        """The file if it exists and belongs to ``org_id``."""
        with self.sessions() as s:
            return s.scalar(_owned(select(FileRecord).where(FileRecord.id == file_id), org_id))

    def path(self, record: FileRecord) -> Path:
        """Where ``record``'s bytes are."""
        return self.data_dir / record.path

    def page(self, org_id: int | None, purpose: str | None, limit: int, after: str | None,
             order: str) -> tuple[list[FileRecord], bool]:
        """Up to ``limit`` files of ``org_id`` (optionally of one purpose) after the file ``after``, and whether
        more follow."""
        query = _owned(select(FileRecord), org_id)
        if purpose is not None:
            query = query.where(FileRecord.purpose == purpose)
        with self.sessions() as s:
            if after is not None:
                cursor = s.scalar(_owned(select(FileRecord.seq).where(FileRecord.id == after), org_id))
                if cursor is not None:
                    query = query.where(FileRecord.seq < cursor if order == "desc" else FileRecord.seq > cursor)
            query = query.order_by(FileRecord.seq.desc() if order == "desc" else FileRecord.seq.asc())
            rows = list(s.scalars(query.limit(limit + 1)))
        return rows[:limit], len(rows) > limit

    def delete(self, record: FileRecord) -> None:
        """Forget ``record`` and remove its bytes."""
        with self.sessions.begin() as s:
            s.execute(FileRecord.__table__.delete().where(FileRecord.seq == record.seq))
        self.path(record).unlink(missing_ok=True)


@lru_cache(maxsize=8)
def file_store(database_url: str, data_dir: Path) -> FileStore:
    """The process's file store for this database and data folder."""
    return FileStore(database_url, data_dir)
