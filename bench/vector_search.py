"""Vector store search latency at 10k and 100k chunks on the server's database (SQLite with sqlite-vec by default,
``--database-url`` for PostgreSQL with pgvector): the search path the ``/search`` route runs (revision check,
completed files, filter, BM25 over the store's in-process index, dense ranking by the database, RRF, chunk texts),
the BM25 index build (first search of a store in a process), and the first search after one more file is added.

Chunks are synthetic (random terms drawn from a vocabulary of 20k, 150 per chunk; random 256-dimensional unit
vectors) so that 100k chunks are written in seconds; Kiwi tokenization of the query is included, of the chunks
not (it happens at ingestion). Results: ``bench/results/vector_search.json``. Target of issue 19: p50 <= 100 ms
at 100k chunks.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert, update

from serving.handlers.vector_stores import rank_chunks, store_terms
from serving.protocol.vector_stores import ComparisonFilter
from serving.retrieval.search import matches
from serving.storage.chunk_vectors import ChunkVectorRecord, vector_rows
from serving.storage.vector_stores import ChunkRecord, VectorStoreFileRecord, vector_store_store

QUERIES = ["병가는 며칠까지 받을 수 있나요", "출장 숙박비 한도", "개인정보 문서 보관 방법", "연차휴가 승인 절차"]
VOCAB = ["병가", "휴가", "출장", "숙박비", "개인정보", "문서", "보관", "연차", "승인"]
VOCAB += [f"어휘{i}" for i in range(20_000)]


def synthetic(rng: random.Random, vectors: np.ndarray, start: int, stop: int) -> list[tuple[str, str, bytes]]:
    """(text, terms, vector) of synthetic chunks ``start`` to ``stop``."""
    return [("본문 " * 300, " ".join(rng.choice(VOCAB) for _ in range(150)), vectors[i].tobytes())
            for i in range(start, stop)]


def unit_vectors(count: int, dims: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dims)).astype("<f4")
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fill(url: str, chunks: int, files: int, dims: int, seed: int) -> str:
    """A store of ``chunks`` synthetic chunks over ``files`` completed files; its id."""
    store = vector_store_store(url)
    record = store.create(None, f"bench-{chunks}", None, None, {}, None)
    store.add_files(record, [(f"file-{i}", f"f{i}.md", {"year": 2000 + i % 25}, {}) for i in range(files)])
    rng = random.Random(seed)
    vectors = unit_vectors(chunks, dims, seed)
    with store.sessions.begin() as s:
        for start in range(0, chunks, 5_000):
            made = synthetic(rng, vectors, start, min(chunks, start + 5_000))
            rows = [ChunkRecord(store_id=record.id, file_id=f"file-{(start + i) % files}", position=start + i,
                                text=text, terms=terms) for i, (text, terms, _) in enumerate(made)]
            s.add_all(rows)
            s.flush()
            s.execute(insert(ChunkVectorRecord), [v for row, (_, _, vector) in zip(rows, made, strict=True)
                                                  for v in vector_rows(record.id, row.file_id, [row.id], [vector])])
        s.execute(update(VectorStoreFileRecord).where(VectorStoreFileRecord.store_id == record.id)
                  .values(status="completed"))
    return record.id


def search_once(url: str, store_id: str, query: str, query_vector: np.ndarray, condition: object) -> None:
    """What the ``/search`` route does after embedding the query."""
    store = vector_store_store(url)
    indexes = {store_id: store_terms(store, url, store_id)}
    files = store.completed_files([store_id])
    allowed = {store_id: {f for (_, f), (_, attrs) in files.items() if matches(condition, attrs)}}
    hits = rank_chunks(store, indexes, allowed, query, query_vector, condition is not None, 10, None)
    store.chunk_texts([h.index for h in hits])


def add_file(url: str, store_id: str, dims: int) -> float:
    """Seconds of the first search after one more file of 100 chunks is added."""
    store = vector_store_store(url)
    [row] = store.add_files(store.get(store_id, None), [("file-new", "new.md", {"year": 2030}, {})])
    store.finish_file(row, synthetic(random.Random(1), unit_vectors(100, dims, 1), 0, 100))
    started = time.perf_counter()
    search_once(url, store_id, QUERIES[0], unit_vectors(1, dims, 2)[0], None)
    return time.perf_counter() - started


def measure(url: str, store_id: str, runs: int, dims: int, filtered: bool) -> dict[str, float]:
    """BM25 index build time and search latencies (ms) of one store."""
    store = vector_store_store(url)
    started = time.perf_counter()
    store_terms(store, url, store_id)
    build = time.perf_counter() - started
    condition = ComparisonFilter(key="year", type="gte", value=2012) if filtered else None
    rng = np.random.default_rng(0)
    search_once(url, store_id, QUERIES[0], rng.standard_normal(dims).astype(np.float32), condition)  # Kiwi loaded
    times = []
    for run in range(runs):
        query_vector = rng.standard_normal(dims).astype(np.float32)
        query_vector /= np.linalg.norm(query_vector)
        started = time.perf_counter()
        search_once(url, store_id, QUERIES[run % len(QUERIES)], query_vector, condition)
        times.append(time.perf_counter() - started)
    times.sort()
    return {"bm25_build_s": round(build, 2), "p50_ms": round(1000 * statistics.median(times), 1),
            "p99_ms": round(1000 * times[min(len(times) - 1, int(0.99 * len(times)))], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("bench/results/vector_search.json"))
    parser.add_argument("--note", default="synthetic chunks; 2 shared CPU cores")
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    backend = url.split(":", 1)[0].split("+")[0]
    results = []
    for size in args.sizes:
        started = time.perf_counter()
        store_id = fill(url, size, max(1, size // 100), args.dims, size)
        written = time.perf_counter() - started
        for filtered in (False, True):
            row = {"database": backend, "chunks": size, "dims": args.dims, "filtered": filtered,
                   "write_s": round(written, 1), **measure(url, store_id, args.runs, args.dims, filtered)}
            print(json.dumps(row), flush=True)
            results.append(row)
        results[-1]["first_search_after_adding_a_file_s"] = round(add_file(url, store_id, args.dims), 2)
        print(json.dumps(results[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"note": args.note, "results": results}, indent=2)
                        + "\n")


if __name__ == "__main__":
    main()
