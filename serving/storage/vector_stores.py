"""Vector stores in the server's database: the stores, their files (status, attributes, last error), file
batches, the chunks (text, Kiwi search terms, position) and their vectors (``chunk_vectors``: sqlite-vec on
SQLite, pgvector on PostgreSQL, ranked by the database).

Search ranks the dense side in the database (:meth:`VectorStoreStore.nearest`) and BM25 in the process over the
stored terms (``serving.retrieval.search``, one index per store revision). Every lookup is scoped to the owning
organisation (None when the server runs without keys).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column

from retrieval.hits import Hit
from serving.storage.chunk_vectors import ChunkVectorRecord, delete_vectors, nearest, vector_rows
from serving.storage.db import Base, ensure_tables, get_sessionmaker, utcnow

FILE_STATUSES = ("in_progress", "completed", "cancelled", "failed")


class VectorStoreRecord(Base):
    """One vector store."""

    __tablename__ = "vector_stores"
    __table_args__ = (Index("ix_vector_stores_org_seq", "org_id", "seq"),)

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    name: Mapped[str | None] = mapped_column(String(512), nullable=True)
    description: Mapped[str | None] = mapped_column(String(512), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_active_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """``expires_after.days`` (anchor ``last_active_at``), or None: never expires."""
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    chunking: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    """The store's default chunking strategy (``{"type": "static", "static": {...}}``)."""
    revision: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Bumped whenever chunks are added or removed: search caches a store's index per revision."""


class VectorStoreFileRecord(Base):
    """A file added to a vector store: its ingestion status and the attributes search filters read."""

    __tablename__ = "vector_store_files"
    __table_args__ = (Index("ix_vector_store_files_store", "store_id", "file_id", unique=True),
                      Index("ix_vector_store_files_batch", "batch_id"))

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64))
    file_id: Mapped[str] = mapped_column(String(64))
    org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    filename: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default="in_progress")
    last_error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    attributes: Mapped[dict] = mapped_column(JSON, default=dict)
    chunking: Mapped[dict] = mapped_column(JSON)
    usage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    batch_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class VectorStoreBatchRecord(Base):
    """A file batch: the files added together (their statuses are the batch's)."""

    __tablename__ = "vector_store_file_batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64), index=True)
    org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    cancelled: Mapped[int] = mapped_column(Integer, default=0)


class ChunkRecord(Base):
    """One chunk of a file in a store."""

    __tablename__ = "vector_store_chunks"
    __table_args__ = (Index("ix_vector_store_chunks_file", "store_id", "file_id", "position"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64))
    file_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    terms: Mapped[str] = mapped_column(Text)
    """Kiwi search terms of the text, space-separated (BM25 needs no Kiwi at search time)."""
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """Only in databases written before ``vector_store_vectors``: moved there when a server starts."""


def new_id(prefix: str) -> str:
    """``vs_<hex>`` / ``vsfb_<hex>``, OpenAI's id style."""
    return f"{prefix}_{uuid.uuid4().hex}"


def _bump(session: Any, store_id: str) -> None:
    """The store's chunks changed (in ``session``'s transaction)."""
    session.execute(VectorStoreRecord.__table__.update().where(VectorStoreRecord.id == store_id)
                    .values(revision=func.coalesce(VectorStoreRecord.revision, 0) + 1))


def _owned(query: Any, column: Any, org_id: int | None) -> Any:
    return query.where(column.is_(None) if org_id is None else column == org_id)


class VectorStoreStore:
    """Vector stores in the database (blocking calls: run them in a worker thread)."""

    def __init__(self, database_url: str) -> None:
        ensure_tables(database_url)
        self.sessions = get_sessionmaker(database_url)
        self._move_legacy_vectors()

    def _move_legacy_vectors(self, batch: int = 2000) -> None:
        """Chunk vectors stored as BLOBs in ``vector_store_chunks`` (before ``vector_store_vectors``) move there."""
        while True:
            with self.sessions.begin() as s:
                rows = s.execute(select(ChunkRecord.id, ChunkRecord.store_id, ChunkRecord.file_id,
                                        ChunkRecord.embedding).where(ChunkRecord.embedding.is_not(None))
                                 .limit(batch)).all()
                if not rows:
                    return
                s.execute(delete(ChunkVectorRecord).where(ChunkVectorRecord.chunk_id.in_([r[0] for r in rows])))
                s.execute(insert(ChunkVectorRecord), [row for r in rows for row in vector_rows(r[1], r[2], [r[0]],
                                                                                               [r[3]])])
                s.execute(ChunkRecord.__table__.update().where(ChunkRecord.id.in_([r[0] for r in rows]))
                          .values(embedding=None))

    # -------------------------------------------------------------------------------------- stores

    def create(self, org_id: int | None, name: str | None, description: str | None, expires_days: int | None,
               meta: dict, chunking: dict | None) -> VectorStoreRecord:
        """A new, empty store."""
        now = utcnow()
        record = VectorStoreRecord(id=new_id("vs"), org_id=org_id, name=name, description=description,
                                   created_at=now, last_active_at=now, expires_days=expires_days, meta=meta,
                                   chunking=chunking)
        with self.sessions.begin() as s:
            s.add(record)
        return record

    def get(self, store_id: str, org_id: int | None) -> VectorStoreRecord | None:
        """The store if it exists and belongs to ``org_id``."""
        with self.sessions() as s:
            return s.scalar(_owned(select(VectorStoreRecord).where(VectorStoreRecord.id == store_id),
                                   VectorStoreRecord.org_id, org_id))

    def update(self, record: VectorStoreRecord, **values: Any) -> VectorStoreRecord:
        """Change columns of ``record`` (name, meta, expires_days, last_active_at)."""
        with self.sessions.begin() as s:
            s.execute(VectorStoreRecord.__table__.update().where(VectorStoreRecord.seq == record.seq)
                      .values(**values))
        for key, value in values.items():
            setattr(record, key, value)
        return record

    def touch(self, record: VectorStoreRecord) -> None:
        """The store was used now (moves its expiry)."""
        self.update(record, last_active_at=utcnow())

    def page(self, org_id: int | None, limit: int, after: str | None, before: str | None,
             order: str) -> tuple[list[VectorStoreRecord], bool]:
        """A page of ``org_id``'s stores."""
        query = _owned(select(VectorStoreRecord), VectorStoreRecord.org_id, org_id)
        with self.sessions() as s:
            query = _cursor(s, query, VectorStoreRecord, VectorStoreRecord.seq, VectorStoreRecord.id, after, before,
                            order)
            rows = list(s.scalars(query.limit(limit + 1)))
        return rows[:limit], len(rows) > limit

    def delete(self, record: VectorStoreRecord) -> None:
        """The store, its files, batches and chunks."""
        with self.sessions.begin() as s:
            s.execute(delete(ChunkRecord).where(ChunkRecord.store_id == record.id))
            s.execute(delete_vectors(record.id))
            s.execute(delete(VectorStoreFileRecord).where(VectorStoreFileRecord.store_id == record.id))
            s.execute(delete(VectorStoreBatchRecord).where(VectorStoreBatchRecord.store_id == record.id))
            s.execute(delete(VectorStoreRecord).where(VectorStoreRecord.seq == record.seq))

    def counts(self, store_ids: list[str], batch_id: str | None = None) -> dict[str, dict[str, int]]:
        """File counts by status per store (of one batch when ``batch_id``), and ``usage_bytes``."""
        out = {sid: {**dict.fromkeys(FILE_STATUSES, 0), "usage_bytes": 0} for sid in store_ids}
        if not store_ids:
            return out
        query = (select(VectorStoreFileRecord.store_id, VectorStoreFileRecord.status, func.count(),
                        func.coalesce(func.sum(VectorStoreFileRecord.usage_bytes), 0))
                 .where(VectorStoreFileRecord.store_id.in_(store_ids))
                 .group_by(VectorStoreFileRecord.store_id, VectorStoreFileRecord.status))
        if batch_id is not None:
            query = query.where(VectorStoreFileRecord.batch_id == batch_id)
        with self.sessions() as s:
            for store_id, status, count, used in s.execute(query):
                out[store_id][status] = int(count)
                out[store_id]["usage_bytes"] += int(used)
        return out

    # --------------------------------------------------------------------------------------- files

    def add_files(self, store: VectorStoreRecord, files: list[tuple[str, str, dict, dict]],
                  batch_id: str | None = None) -> list[VectorStoreFileRecord]:
        """Add (file id, filename, attributes, chunking) to ``store`` as ``in_progress``; a file already in
        the store is reset and ingested again."""
        rows = []
        with self.sessions.begin() as s:
            if batch_id is not None:
                s.add(VectorStoreBatchRecord(id=batch_id, store_id=store.id, org_id=store.org_id, created_at=utcnow()))
            for file_id, filename, attributes, chunking in files:
                s.execute(delete(ChunkRecord).where(ChunkRecord.store_id == store.id, ChunkRecord.file_id == file_id))
                s.execute(delete_vectors(store.id, file_id))
                s.execute(delete(VectorStoreFileRecord).where(VectorStoreFileRecord.store_id == store.id,
                                                              VectorStoreFileRecord.file_id == file_id))
                row = VectorStoreFileRecord(store_id=store.id, file_id=file_id, org_id=store.org_id, filename=filename,
                                            status="in_progress", attributes=attributes, chunking=chunking,
                                            created_at=utcnow(), batch_id=batch_id)
                s.add(row)
                rows.append(row)
            _bump(s, store.id)
        return rows

    def pending_files(self) -> list[VectorStoreFileRecord]:
        """Files of every store still ``in_progress`` (their ingestion was cut by a restart), oldest first."""
        with self.sessions() as s:
            return list(s.scalars(select(VectorStoreFileRecord).where(VectorStoreFileRecord.status == "in_progress")
                                  .order_by(VectorStoreFileRecord.seq)))

    def get_file(self, store_id: str, file_id: str) -> VectorStoreFileRecord | None:
        """A file of the store (the caller checked the store's owner)."""
        with self.sessions() as s:
            return s.scalar(select(VectorStoreFileRecord).where(VectorStoreFileRecord.store_id == store_id,
                                                                VectorStoreFileRecord.file_id == file_id))

    def set_attributes(self, row: VectorStoreFileRecord, attributes: dict) -> VectorStoreFileRecord:
        """Replace a file's attributes."""
        with self.sessions.begin() as s:
            s.execute(VectorStoreFileRecord.__table__.update().where(VectorStoreFileRecord.seq == row.seq)
                      .values(attributes=attributes))
        row.attributes = attributes
        return row

    def file_page(self, store_id: str, status: str | None, batch_id: str | None, limit: int, after: str | None,
                  before: str | None, order: str) -> tuple[list[VectorStoreFileRecord], bool]:
        """A page of a store's files (of one status, of one batch)."""
        query = select(VectorStoreFileRecord).where(VectorStoreFileRecord.store_id == store_id)
        if status is not None:
            query = query.where(VectorStoreFileRecord.status == status)
        if batch_id is not None:
            query = query.where(VectorStoreFileRecord.batch_id == batch_id)
        with self.sessions() as s:
            query = _cursor(s, query.where(), VectorStoreFileRecord, VectorStoreFileRecord.seq,
                            VectorStoreFileRecord.file_id, after, before, order,
                            extra=VectorStoreFileRecord.store_id == store_id)
            rows = list(s.scalars(query.limit(limit + 1)))
        return rows[:limit], len(rows) > limit

    def remove_file(self, row: VectorStoreFileRecord) -> None:
        """Take a file (and its chunks) out of its store."""
        with self.sessions.begin() as s:
            s.execute(delete(ChunkRecord).where(ChunkRecord.store_id == row.store_id,
                                                ChunkRecord.file_id == row.file_id))
            s.execute(delete_vectors(row.store_id, row.file_id))
            s.execute(delete(VectorStoreFileRecord).where(VectorStoreFileRecord.seq == row.seq))
            _bump(s, row.store_id)

    def finish_file(self, row: VectorStoreFileRecord, chunks: list[tuple[str, str, bytes | None]]) -> bool:
        """Store the chunks (text, terms, vector) and mark the file completed, in one transaction; False when
        the file was removed (or cancelled) meanwhile."""
        with self.sessions.begin() as s:
            current = s.scalar(select(VectorStoreFileRecord.status).where(VectorStoreFileRecord.seq == row.seq))
            if current != "in_progress":
                return False
            s.execute(delete(ChunkRecord).where(ChunkRecord.store_id == row.store_id,
                                                ChunkRecord.file_id == row.file_id))
            s.execute(delete_vectors(row.store_id, row.file_id))
            records = [ChunkRecord(store_id=row.store_id, file_id=row.file_id, position=i, text=text, terms=terms)
                       for i, (text, terms, _) in enumerate(chunks)]
            s.add_all(records)
            s.flush()
            vectors = vector_rows(row.store_id, row.file_id, [r.id for r in records], [v for _, _, v in chunks])
            if vectors:
                s.execute(insert(ChunkVectorRecord), vectors)
            used = sum(len(text.encode()) + len(vector or b"") for text, _, vector in chunks)
            s.execute(VectorStoreFileRecord.__table__.update().where(VectorStoreFileRecord.seq == row.seq)
                      .values(status="completed", usage_bytes=used, last_error=None))
            _bump(s, row.store_id)
        return True

    def fail_file(self, row: VectorStoreFileRecord, code: str, message: str) -> None:
        """Mark the file failed with ``last_error`` (unless it was removed or cancelled)."""
        with self.sessions.begin() as s:
            s.execute(VectorStoreFileRecord.__table__.update()
                      .where(VectorStoreFileRecord.seq == row.seq, VectorStoreFileRecord.status == "in_progress")
                      .values(status="failed", last_error={"code": code, "message": message[:1000]}))

    def file_chunks(self, store_id: str, file_id: str) -> list[str]:
        """The chunk texts of one file, in order."""
        with self.sessions() as s:
            return list(s.scalars(select(ChunkRecord.text).where(ChunkRecord.store_id == store_id,
                                                                 ChunkRecord.file_id == file_id)
                                  .order_by(ChunkRecord.position)))

    # ------------------------------------------------------------------------------------- batches

    def get_batch(self, store_id: str, batch_id: str) -> VectorStoreBatchRecord | None:
        """A batch of the store."""
        with self.sessions() as s:
            return s.scalar(select(VectorStoreBatchRecord).where(VectorStoreBatchRecord.id == batch_id,
                                                                 VectorStoreBatchRecord.store_id == store_id))

    def cancel_batch(self, batch: VectorStoreBatchRecord) -> None:
        """Cancel the batch's files still in progress."""
        with self.sessions.begin() as s:
            s.execute(VectorStoreBatchRecord.__table__.update().where(VectorStoreBatchRecord.id == batch.id)
                      .values(cancelled=1))
            s.execute(VectorStoreFileRecord.__table__.update()
                      .where(VectorStoreFileRecord.batch_id == batch.id,
                             VectorStoreFileRecord.status == "in_progress").values(status="cancelled"))
        batch.cancelled = 1

    # -------------------------------------------------------------------------------------- search

    def revision(self, store_id: str) -> int:
        """The store's revision: it moves whenever a file's chunks are added or removed."""
        with self.sessions() as s:
            return int(s.scalar(select(func.coalesce(VectorStoreRecord.revision, 0))
                                .where(VectorStoreRecord.id == store_id)) or 0)

    def chunk_terms(self, store_id: str) -> list[tuple[int, str, str]]:
        """(chunk id, file id, terms) of every chunk of a store, in insertion order (what BM25 indexes)."""
        with self.sessions() as s:
            return [tuple(row) for row in s.execute(  # type: ignore[misc]
                select(ChunkRecord.id, ChunkRecord.file_id, ChunkRecord.terms)
                .where(ChunkRecord.store_id == store_id).order_by(ChunkRecord.id))]

    def chunk_texts(self, chunk_ids: list[int]) -> dict[int, tuple[str, str, str]]:
        """(store id, file id, text) of the given chunks, by chunk id."""
        if not chunk_ids:
            return {}
        with self.sessions() as s:
            return {int(row[0]): tuple(row[1:]) for row in s.execute(  # type: ignore[misc]
                select(ChunkRecord.id, ChunkRecord.store_id, ChunkRecord.file_id, ChunkRecord.text)
                .where(ChunkRecord.id.in_(chunk_ids)))}

    def has_vectors(self, store_ids: list[str]) -> bool:
        """Whether any chunk of ``store_ids`` has a vector."""
        with self.sessions() as s:
            found = s.scalar(select(ChunkVectorRecord.chunk_id).where(ChunkVectorRecord.store_id.in_(store_ids))
                             .limit(1))
        return found is not None

    def nearest(self, store_id: str, query: np.ndarray, depth: int, file_ids: list[str] | None = None) -> list[Hit]:
        """The ``depth`` chunks of the store nearest to ``query`` (of ``file_ids`` only, when given), ranked by
        the database: hits of (chunk id, cosine), best first."""
        with self.sessions() as s:
            return nearest(s, store_id, query, depth, file_ids)

    def completed_files(self, store_ids: list[str]) -> dict[tuple[str, str], tuple[str, dict]]:
        """(filename, attributes) of the completed files of ``store_ids``, by (store id, file id)."""
        with self.sessions() as s:
            rows = s.execute(select(VectorStoreFileRecord.store_id, VectorStoreFileRecord.file_id,
                                    VectorStoreFileRecord.filename, VectorStoreFileRecord.attributes)
                             .where(VectorStoreFileRecord.store_id.in_(store_ids),
                                    VectorStoreFileRecord.status == "completed"))
            return {(store, file): (name, attrs or {}) for store, file, name, attrs in rows}


def _cursor(session: Any, query: Any, model: Any, seq: Any, key: Any, after: str | None, before: str | None,
            order: str, extra: Any = None) -> Any:
    """``query`` ordered by insertion (``order``) and cut at the ``after`` / ``before`` ids."""
    for cursor_id, later in ((after, True), (before, False)):
        if cursor_id is None:
            continue
        lookup = select(seq).where(key == cursor_id)
        if extra is not None:
            lookup = lookup.where(extra)
        mark = session.scalar(lookup)
        if mark is not None:
            forward = (order == "asc") == later
            query = query.where(seq > mark if forward else seq < mark)
    return query.order_by(seq.desc() if order == "desc" else seq.asc())


def expires_at(record: VectorStoreRecord) -> datetime | None:
    """When the store expires (``last_active_at`` + ``expires_after.days``), or None."""
    if record.expires_days is None:
        return None
    return record.last_active_at + timedelta(days=record.expires_days)


def is_expired(record: VectorStoreRecord) -> bool:
    """Whether the store's expiry has passed."""
    moment = expires_at(record)
    if moment is None:
        return False
    if moment.tzinfo is None:  # SQLite hands back naive datetimes
        return moment < utcnow().replace(tzinfo=None)
    return moment < utcnow()


@lru_cache(maxsize=8)
def vector_store_store(database_url: str) -> VectorStoreStore:
    """The process's vector store database for ``database_url``."""
    return VectorStoreStore(database_url)
