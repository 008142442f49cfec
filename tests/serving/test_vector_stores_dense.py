"""The dense side of vector store search, ranked by the database (sqlite-vec on SQLite, pgvector on the real
PostgreSQL that ``make test`` starts): the same answers as exact cosine in numpy over the allowed files,
vectors of another width never compared, removed files gone at once, and BLOBs of older databases moved over."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, text

from serving.storage.chunk_vectors import ChunkVectorRecord
from serving.storage.vector_stores import ChunkRecord, VectorStoreStore
from tests.serving.conftest_pg import pg_db_url, postgres_url  # noqa: F401  (fixtures)

DIMS = 16


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server.db'}"
    return request.getfixturevalue("pg_db_url")


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype("<f4")


def filled(url: str, files: int = 3, per_file: int = 40, dims: int = DIMS):
    """A store with ``files`` completed files of random unit vectors; (store, record, {chunk id: vector})."""
    store = VectorStoreStore(url)
    record = store.create(None, "dense", None, None, {}, None)
    rows = store.add_files(record, [(f"file-{i}", f"f{i}.md", {}, {}) for i in range(files)])
    rng = np.random.default_rng(7)
    for row in rows:
        vectors = unit(rng.standard_normal((per_file, dims)))
        assert store.finish_file(row, [(f"{row.file_id} {i}", "용어", v.tobytes()) for i, v in enumerate(vectors)])
    with store.sessions() as s:
        stored = {cid: np.frombuffer(v, dtype="<f4") for cid, v in s.execute(
            select(ChunkVectorRecord.chunk_id, ChunkVectorRecord.embedding))}
    return store, record, stored


def exact(stored: dict[int, np.ndarray], query: np.ndarray, keep: set[int], depth: int) -> list[int]:
    ids = sorted(keep)
    scores = np.stack([stored[i] for i in ids]) @ query
    return [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))][:depth]


def test_the_databases_ranking_is_exact_cosine_over_the_allowed_files(database_url: str) -> None:
    store, record, stored = filled(database_url)
    files = {cid: fid for cid, fid, _ in store.chunk_terms(record.id)}
    query = unit(np.random.default_rng(1).standard_normal(DIMS))
    hits = store.nearest(record.id, query, 10)
    assert [h.index for h in hits] == exact(stored, query, set(stored), 10)
    for hit in hits:
        assert hit.score == pytest.approx(float(stored[hit.index] @ query), abs=1e-5)
    only = store.nearest(record.id, query, 500, ["file-1", "file-2"])
    assert [h.index for h in only] == exact(stored, query, {c for c, f in files.items() if f != "file-0"}, 500)
    assert store.nearest(record.id, query, 10, []) == []
    if database_url.startswith("postgresql"):
        with store.sessions() as s:
            assert s.scalar(text("SELECT pg_typeof(embedding)::text FROM vector_store_vectors LIMIT 1")) == "vector"


def test_other_widths_are_not_compared_and_removed_files_are_gone(database_url: str) -> None:
    store, record, stored = filled(database_url, files=2)
    [other] = store.add_files(record, [("file-wide", "wide.md", {}, {})])
    store.finish_file(other, [("넓은", "용어", unit(np.ones(DIMS * 2)).tobytes())])
    query = unit(np.random.default_rng(2).standard_normal(DIMS))
    assert [h.index for h in store.nearest(record.id, query, 100)] == exact(stored, query, set(stored), 100)
    assert len(store.nearest(record.id, unit(np.ones(DIMS * 2)), 100)) == 1
    [gone] = [r for r in store.file_page(record.id, None, None, 10, None, None, "asc")[0] if r.file_id == "file-0"]
    store.remove_file(gone)
    left = {c for c, f, _ in store.chunk_terms(record.id)}
    assert {h.index for h in store.nearest(record.id, query, 100)} == left & set(stored)


def test_vectors_of_an_older_database_move_to_the_vector_table(database_url: str) -> None:
    store, record, _ = filled(database_url, files=1, per_file=3)
    legacy = unit(np.random.default_rng(3).standard_normal(DIMS))
    with store.sessions.begin() as s:
        s.add(ChunkRecord(store_id=record.id, file_id="file-0", position=9, text="옛날", terms="옛날",
                          embedding=legacy.tobytes()))
    VectorStoreStore(database_url)  # a server starting on the old database
    with store.sessions() as s:
        assert s.scalar(select(ChunkRecord.id).where(ChunkRecord.embedding.is_not(None))) is None
    best = store.nearest(record.id, legacy, 1)[0]
    assert best.score == pytest.approx(1.0, abs=1e-5)
    assert store.chunk_texts([best.index])[best.index][2] == "옛날"


def test_sqlite_vec0_index_is_filled_once_and_kept_in_step(tmp_path: Path) -> None:
    """SQLite answers unfiltered searches from a sqlite-vec ``vec0`` table: made and filled from the vectors
    already stored at the first search, then kept in step by triggers (new files, removed files, removed
    stores, other stores never mixed in), always the exact ranking of the vector table."""
    from serving.storage.chunk_vectors import vec0_table

    url = f"sqlite:///{tmp_path / 'server.db'}"
    store, record, stored = filled(url)
    name = vec0_table(DIMS)

    def indexed() -> int:
        with store.sessions() as s:
            found = s.scalar(text("SELECT count(*) FROM sqlite_master WHERE name = :n"), {"n": name})
            return s.scalar(text(f"SELECT count(*) FROM {name}")) if found else -1

    assert indexed() == -1  # nothing made before a search needs it
    rng = np.random.default_rng(11)
    query = unit(rng.standard_normal(DIMS))
    assert [h.index for h in store.nearest(record.id, query, 20)] == exact(stored, query, set(stored), 20)
    assert indexed() == len(stored) == 120

    _, other, other_stored = filled(url, files=1, per_file=5)  # same database, another store
    assert indexed() == 125
    assert {h.index for h in store.nearest(record.id, query, 500)} == set(stored)
    assert {h.index for h in store.nearest(other.id, query, 500)} == set(other_stored) - set(stored)

    [extra] = store.add_files(record, [("file-new", "new.md", {}, {})])
    close = unit(query + 0.01 * rng.standard_normal(DIMS))
    store.finish_file(extra, [("새 문서", "용어", close.tobytes())])
    best = store.nearest(record.id, query, 1)[0]
    assert store.chunk_texts([best.index])[best.index][2] == "새 문서"
    [gone] = [r for r in store.file_page(record.id, None, None, 10, None, None, "asc")[0] if r.file_id == "file-new"]
    store.remove_file(gone)
    assert [h.index for h in store.nearest(record.id, query, 20)] == exact(stored, query, set(stored), 20)
    assert indexed() == 125
    store.delete(store.get(record.id, None))
    assert indexed() == 5 and store.nearest(record.id, query, 20) == []
