"""Chunk vectors of vector stores, ranked by the database: the one dialect seam between SQLite and PostgreSQL.

One table for both: a row per embedded chunk (its store, file and width beside the vector). The vector column is
a float32 BLOB on SQLite, ranked with sqlite-vec's ``vec_distance_cosine``, and a pgvector ``vector`` on
PostgreSQL, ranked with ``<=>``. Both scan the filtered rows exactly (the store's, of the allowed files, of the
query's width): no approximate index, so a filter never loses results and a new file is searchable at once.
Everything else (the query, the filter, the order) is the same SQLAlchemy statement on both.

On SQLite an unfiltered search (every completed file of the store) reads a sqlite-vec ``vec0`` table instead:
one per vector width, partitioned by store, its vectors packed together (a row-by-row scan of the table above
spends ~1 microsecond a row on the B-tree alone: 90 ms at 100k chunks; ``vec0`` about half). It is exact too
(brute force over the store's partition), and the database keeps it in step: it is made and filled from the
table above at the first search of that width, and triggers copy every insert and delete from then on, in the
same transaction.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    BigInteger,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    bindparam,
    cast,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from retrieval.hits import Hit
from serving.storage.db import Base


class DenseVector(TypeDecorator):
    """A unit vector: little-endian float32 bytes in Python, a BLOB on SQLite, pgvector's ``vector`` on
    PostgreSQL (any width: rows of one width are compared, see :func:`nearest`)."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        return dialect.type_descriptor(VECTOR() if dialect.name == "postgresql" else LargeBinary())

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return np.frombuffer(value, dtype="<f4") if isinstance(value, bytes) else np.asarray(value, np.float32)
        return value if isinstance(value, bytes) else np.asarray(value, dtype="<f4").tobytes()

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None or isinstance(value, bytes):
            return value
        return np.asarray(value, dtype="<f4").tobytes()


class ChunkVectorRecord(Base):
    """The embedding of one chunk (``vector_store_chunks.id``)."""

    __tablename__ = "vector_store_vectors"
    __table_args__ = (Index("ix_vector_store_vectors_store", "store_id", "dims", "file_id"),)

    chunk_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                          autoincrement=False)
    store_id: Mapped[str] = mapped_column(String(64))
    file_id: Mapped[str] = mapped_column(String(64))
    dims: Mapped[int] = mapped_column(Integer)
    """The vector's width: chunks embedded by another model than the query's are not compared."""
    embedding: Mapped[bytes] = mapped_column(DenseVector())


def cosine_distance(dialect: str, query: np.ndarray) -> Any:
    """``1 - cosine`` of each row's vector to ``query``, in the database's own vector extension."""
    column = ChunkVectorRecord.embedding
    value = bindparam("query_vector", query.astype("<f4").tobytes(), type_=DenseVector())
    if dialect == "postgresql":
        return column.op("<=>", return_type=Float())(cast(value, VECTOR()))
    return func.vec_distance_cosine(column, value)


_making_index = threading.Lock()


def vec0_table(dims: int) -> str:
    """The name of the SQLite ``vec0`` table of ``dims``-wide vectors."""
    return f"vector_store_vec{int(dims)}"


def ensure_vec0(session: Any, dims: int) -> str | None:
    """The name of the ``vec0`` table of this width, made, filled from ``vector_store_vectors`` and wired to it
    by triggers in one transaction of its own when it does not exist yet; None when it cannot be made now (the
    session is inside a write: the caller scans exactly instead)."""
    name = vec0_table(dims)
    exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    raw = session.connection().connection.dbapi_connection
    if raw.execute(exists, (name,)).fetchone():
        return name
    with _making_index:
        if raw.in_transaction:
            return None
        raw.execute("BEGIN IMMEDIATE")
        try:
            if not raw.execute(exists, (name,)).fetchone():
                width = int(dims)
                raw.execute(f"CREATE VIRTUAL TABLE {name} USING vec0(chunk_id integer primary key, "
                            f"store_id text partition key, embedding float[{width}] distance_metric=cosine)")
                raw.execute(f"INSERT INTO {name}(chunk_id, store_id, embedding) SELECT chunk_id, store_id, embedding "
                            f"FROM vector_store_vectors WHERE dims = {width}")
                raw.execute(f"CREATE TRIGGER {name}_insert AFTER INSERT ON vector_store_vectors "
                            f"WHEN new.dims = {width} BEGIN INSERT INTO {name}(chunk_id, store_id, embedding) "
                            f"VALUES (new.chunk_id, new.store_id, new.embedding); END")
                raw.execute(f"CREATE TRIGGER {name}_delete AFTER DELETE ON vector_store_vectors "
                            f"WHEN old.dims = {width} BEGIN DELETE FROM {name} WHERE chunk_id = old.chunk_id; END")
            raw.execute("COMMIT")
        except BaseException:
            raw.execute("ROLLBACK")
            raise
    return name


def _nearest_vec0(session: Any, store_id: str, query: np.ndarray, depth: int) -> list[Hit] | None:
    name = ensure_vec0(session, int(query.shape[-1]))
    if name is None:
        return None
    rows = session.execute(text(f"SELECT chunk_id, distance FROM {name} WHERE embedding MATCH :query AND k = :depth "
                                f"AND store_id = :store"),
                           {"query": query.astype("<f4").tobytes(), "depth": depth, "store": store_id})
    return [Hit(int(chunk_id), 1.0 - float(d)) for d, chunk_id in sorted((d, c) for c, d in rows)]


def nearest(session: Any, store_id: str, query: np.ndarray, depth: int,
            file_ids: list[str] | None = None) -> list[Hit]:
    """The ``depth`` chunks of a store nearest to ``query`` (of ``file_ids`` only, when given), best first:
    hits with the chunk id and the cosine similarity (ties by the older chunk)."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite" and file_ids is None and depth > 0:
        found = _nearest_vec0(session, store_id, query, depth)
        if found is not None:
            return found
    distance = cosine_distance(dialect, query).label("distance")
    statement = (select(ChunkVectorRecord.chunk_id, distance)
                 .where(ChunkVectorRecord.store_id == store_id, ChunkVectorRecord.dims == int(query.shape[-1])))
    if file_ids is not None:
        if not file_ids:
            return []
        statement = statement.where(ChunkVectorRecord.file_id.in_(file_ids))
    rows = session.execute(statement.order_by(distance, ChunkVectorRecord.chunk_id).limit(depth))
    return [Hit(int(chunk_id), 1.0 - float(d)) for chunk_id, d in rows]


def vector_rows(store_id: str, file_id: str, chunk_ids: list[int], vectors: list[bytes | None]) -> list[dict]:
    """Rows of :class:`ChunkVectorRecord` for a file's new chunks (those without a vector left out)."""
    return [{"chunk_id": cid, "store_id": store_id, "file_id": file_id, "dims": len(v) // 4, "embedding": v}
            for cid, v in zip(chunk_ids, vectors, strict=True) if v]


def delete_vectors(store_id: str, file_id: str | None = None) -> Any:
    """The statement deleting a store's vectors (one file's, when given)."""
    statement = delete(ChunkVectorRecord).where(ChunkVectorRecord.store_id == store_id)
    return statement if file_id is None else statement.where(ChunkVectorRecord.file_id == file_id)
