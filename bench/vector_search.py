"""Vector store search latency at 10k and 100k chunks on the server's database (SQLite by default,
``--database-url`` for PostgreSQL): the store's index built once (first search after a change), then the search
path the ``/search`` route runs (revision check, completed files, filter mask, BM25 + dense, RRF).

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
from sqlalchemy import update

from serving.handlers.vector_stores import snapshot
from serving.protocol.vector_stores import ComparisonFilter
from serving.retrieval.search import fuse, matches
from serving.storage.vector_stores import ChunkRecord, VectorStoreFileRecord, vector_store_store

QUERIES = ["병가는 며칠까지 받을 수 있나요", "출장 숙박비 한도", "개인정보 문서 보관 방법", "연차휴가 승인 절차"]


def fill(url: str, chunks: int, files: int, dims: int, seed: int) -> str:
    """A store of ``chunks`` synthetic chunks over ``files`` completed files; its id."""
    store = vector_store_store(url)
    record = store.create(None, f"bench-{chunks}", None, None, {}, None)
    store.add_files(record, [(f"file-{i}", f"f{i}.md", {"year": 2000 + i % 25}, {}) for i in range(files)])
    rng = random.Random(seed)
    vocab = ["병가", "휴가", "출장", "숙박비", "개인정보", "문서", "보관", "연차", "승인"]
    vocab += [f"어휘{i}" for i in range(20_000)]
    vectors = np.random.default_rng(seed).standard_normal((chunks, dims)).astype("<f4")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with store.sessions.begin() as s:
        for start in range(0, chunks, 5_000):
            s.add_all([ChunkRecord(store_id=record.id, file_id=f"file-{i % files}", position=i, text="본문 " * 300,
                                   terms=" ".join(rng.choice(vocab) for _ in range(150)),
                                   embedding=vectors[i].tobytes()) for i in range(start, min(chunks, start + 5_000))])
            s.flush()
        s.execute(update(VectorStoreFileRecord).where(VectorStoreFileRecord.store_id == record.id)
                  .values(status="completed"))
    return record.id


def measure(url: str, store_id: str, runs: int, dims: int, filtered: bool) -> dict[str, float]:
    """Build time and search latencies (ms) of one store."""
    store = vector_store_store(url)
    started = time.perf_counter()
    snap = snapshot(store, url, store_id)
    build = time.perf_counter() - started
    condition = ComparisonFilter(key="year", type="gte", value=2012) if filtered else None
    rng = np.random.default_rng(0)
    fuse(snap.index.bm25_scores(QUERIES[0]), None, np.ones(snap.index.size, dtype=bool), 10)  # Kiwi loaded
    times = []
    for run in range(runs):
        query_vector = rng.standard_normal(dims).astype(np.float32)
        started = time.perf_counter()
        snap = snapshot(store, url, store_id)
        files = store.completed_files([store_id])
        ok = np.asarray([(store_id, f) in files and matches(condition, files[(store_id, f)][1]) for f in snap.files])
        fuse(snap.index.bm25_scores(QUERIES[run % len(QUERIES)]), snap.index.dense_scores(query_vector),
             ok[snap.file_of], 10)
        times.append(time.perf_counter() - started)
    times.sort()
    return {"build_s": round(build, 2), "p50_ms": round(1000 * statistics.median(times), 1),
            "p99_ms": round(1000 * times[min(len(times) - 1, int(0.99 * len(times)))], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("bench/results/vector_search.json"))
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
            print(json.dumps(row))
            results.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"note": "synthetic chunks; 2 shared CPU cores", "results": results}, indent=2)
                        + "\n")


if __name__ == "__main__":
    main()
