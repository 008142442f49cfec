"""Hybrid search over stored chunks: Kiwi-morpheme BM25 and dense cosine, fused by reciprocal rank, with
OpenAI's attribute filters (applied by the caller before ranking) and a score threshold.

A vector store's BM25 ranking comes from :class:`StoreTerms` (its stored terms, indexed once per revision) and
its dense ranking from the database (``serving.storage.chunk_vectors``); both rank chunk ids, which
:func:`fuse_rankings` fuses. :class:`ChunkIndex` ranks an in-memory list of chunks both ways (benchmarks).

Scores: the weighted RRF score divided by the best possible one (first in every ranking used), so in (0, 1]:
1.0 is a chunk ranked first by both BM25 and the dense model (or by BM25 when no embedding model is served).
``ranking_options.score_threshold`` compares against this; ``ranking_options.hybrid_search`` (OpenAI's
``text_weight`` / ``embedding_weight``) sets the two rankings' weights, :class:`HybridWeights` otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from retrieval.bm25 import BM25Index
from retrieval.dense import DenseIndex
from retrieval.fusion import reciprocal_rank_fusion
from retrieval.hits import Hit
from retrieval.korean import KoreanMorphemes

RRF_K = 60


@dataclass(frozen=True)
class HybridWeights:
    """How much BM25 (``text``) and dense cosine (``embedding``) count in the fusion."""

    text: float = 1.0
    embedding: float = 1.0

    def of(self, rankings: int) -> list[float]:
        """Weights of the BM25 ranking and, when there are two rankings, the dense one."""
        return [self.text, self.embedding][:rankings] if rankings > 1 else [1.0]


@lru_cache(maxsize=1)
def _morphemes() -> tuple[KoreanMorphemes, threading.Lock]:
    return KoreanMorphemes(), threading.Lock()


def search_terms(texts: list[str]) -> list[str]:
    """Kiwi search terms of each text, space-separated (what a chunk stores for BM25)."""
    tokenizer, lock = _morphemes()
    with lock:
        return [" ".join(terms) for terms in tokenizer(texts)]


class _StoredTerms:
    """The BM25 index's tokenizer over stored terms: documents are already split, queries go through Kiwi."""

    def __call__(self, texts: list[str]) -> list[list[str]]:
        return [[t for t in text.split(" ") if t] for text in texts]

    def terms(self, query: str) -> list[str]:
        return search_terms([query])[0].split()


# -------------------------------------------------------------------------------------------- filters


def _compare(kind: str, have: Any, want: Any) -> bool:
    if kind == "in":
        return have in want
    if kind == "nin":
        return have not in want
    if kind == "eq":
        return have == want
    if kind == "ne":
        return have != want
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (have, want))
    if not numbers and not (isinstance(have, str) and isinstance(want, str)):
        return False  # order comparisons only between two numbers or two strings
    return {"gt": have > want, "gte": have >= want, "lt": have < want, "lte": have <= want}[kind]


def matches(filters: Any, attributes: dict[str, Any]) -> bool:
    """Whether a file's attributes pass OpenAI's comparison / compound filter (a missing key fails every
    comparison but ``ne`` and ``nin``)."""
    if filters is None:
        return True
    kind = filters.type
    if kind == "and":
        return all(matches(f, attributes) for f in filters.filters)
    if kind == "or":
        return any(matches(f, attributes) for f in filters.filters)
    if filters.key not in attributes:
        return kind in ("ne", "nin")
    return _compare(kind, attributes[filters.key], filters.value)


# -------------------------------------------------------------------------------------------- ranking


class ChunkIndex:
    """BM25 (over stored Kiwi terms) and a unit-vector matrix of one store's chunks, built once per revision of
    the store and reused by every search until a file is added or removed."""

    def __init__(self, terms: Sequence[str], vectors: Sequence[bytes | None]) -> None:
        self.size = len(terms)
        self.bm25 = BM25Index(list(terms), tokenizer=_StoredTerms()) if terms else None  # type: ignore[arg-type]
        widths = [len(v) for v in vectors if v is not None]
        self.rows = np.zeros(0, dtype=np.int64)
        self.matrix: np.ndarray | None = None
        if widths:
            width = max(set(widths), key=widths.count)  # chunks embedded by another model are left out
            rows = [i for i, v in enumerate(vectors) if v is not None and len(v) == width]
            self.rows = np.asarray(rows, dtype=np.int64)
            self.matrix = DenseIndex(np.stack([np.frombuffer(vectors[i], dtype="<f4") for i in rows])).vectors

    def bm25_scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk (0: no shared term)."""
        return self.bm25.scores(query) if self.bm25 is not None else np.zeros(self.size, dtype=np.float32)

    def dense_scores(self, query_vector: np.ndarray | None) -> np.ndarray | None:
        """Cosine of every chunk to the query (NaN for chunks without a vector), or None without dense search."""
        if query_vector is None or self.matrix is None or self.matrix.shape[1] != query_vector.shape[-1]:
            return None
        out = np.full(self.size, np.nan, dtype=np.float32)
        unit = query_vector / max(float(np.linalg.norm(query_vector)), 1e-12)
        out[self.rows] = self.matrix @ unit.astype(np.float32)
        return out


def _ranking(scores: np.ndarray, allowed: np.ndarray, depth: int, positive: bool) -> list[Hit]:
    valid = allowed & ~np.isnan(scores) & ((scores > 0) if positive else True)
    index = np.flatnonzero(valid)
    if not index.size:
        return []
    values = scores[index]
    take = min(depth, index.size)
    part = np.argpartition(-values, take - 1)[:take] if take < index.size else np.arange(index.size)
    order = part[np.lexsort((index[part], -values[part]))]
    return [Hit(int(index[i]), float(values[i])) for i in order]


DEPTH = 200
"""Each ranking (BM25, dense) is cut to this many chunks before fusion."""


def fuse_rankings(rankings: Sequence[Sequence[Hit]], top: int | None = None, threshold: float | None = None,
                  weights: HybridWeights | None = None) -> list[Hit]:
    """Weighted RRF of best-first rankings (BM25 first, then dense), scores normalised to (0, 1] (1.0: first in
    every ranking), cut at ``threshold`` and to ``top``."""
    each = (weights or HybridWeights()).of(len(rankings))
    best = sum(each) / (RRF_K + 1)
    if best <= 0:
        raise ValueError("at least one ranking needs a positive weight")
    fused = reciprocal_rank_fusion(rankings, k=RRF_K, weights=each)
    out = [Hit(h.index, round(min(1.0, h.score / best), 6)) for h in fused]
    if threshold is not None:
        out = [h for h in out if h.score >= threshold]
    return out[:top] if top is not None else out


def merge_rankings(rankings: Sequence[Sequence[Hit]], depth: int = DEPTH) -> list[Hit]:
    """Rankings of several stores as one (by score, ties by the lower chunk id), cut to ``depth``."""
    return sorted((h for ranking in rankings for h in ranking), key=lambda h: (-h.score, h.index))[:depth]


def fuse(bm25: np.ndarray, dense: np.ndarray | None, allowed: np.ndarray, top: int,
         threshold: float | None = None, depth: int = DEPTH, weights: HybridWeights | None = None) -> list[Hit]:
    """The best ``top`` allowed chunks by RRF of the BM25 ranking (chunks sharing a term) and the dense ranking
    (each cut to ``depth``); scores normalised to (0, 1] and cut at ``threshold``."""
    depth = max(depth, top)
    rankings = [_ranking(bm25, allowed, depth, positive=True)]
    if dense is not None:
        rankings.append(_ranking(dense, allowed, depth, positive=False))
    return fuse_rankings(rankings, top, threshold, weights)


class StoreTerms:
    """BM25 over one vector store's stored Kiwi terms at one revision, with each chunk's id and file: the part
    of a store's search kept in the process (the dense part is the database's)."""

    def __init__(self, rows: Sequence[tuple[int, str, str]]) -> None:
        files: dict[str, int] = {}
        self.chunk_ids = np.asarray([row[0] for row in rows], dtype=np.int64)
        self.file_of = np.asarray([files.setdefault(row[1], len(files)) for row in rows], dtype=np.int64)
        self.files = list(files)
        terms = [row[2] for row in rows]
        self.bm25 = BM25Index(terms, tokenizer=_StoredTerms()) if terms else None  # type: ignore[arg-type]

    def ranking(self, query: str, allowed_files: set[str], depth: int = DEPTH) -> list[Hit]:
        """The chunks of ``allowed_files`` sharing a term with ``query``, best first: hits of (chunk id, BM25)."""
        if self.bm25 is None:
            return []
        ok = np.asarray([f in allowed_files for f in self.files], dtype=bool)
        hits = _ranking(self.bm25.scores(query), ok[self.file_of], depth, positive=True)
        return [Hit(int(self.chunk_ids[h.index]), h.score) for h in hits]


def hybrid_rank(query: str, terms: Sequence[str], vectors: Sequence[bytes | None], query_vector: np.ndarray | None,
                top: int, threshold: float | None = None) -> list[Hit]:
    """The best ``top`` of the candidate chunks (their stored ``terms`` and float32 ``vectors``) for ``query``
    (see :func:`fuse`), BM25 alone without ``query_vector``."""
    if not terms:
        return []
    index = ChunkIndex(terms, vectors)
    allowed = np.ones(index.size, dtype=bool)
    return fuse(index.bm25_scores(query), index.dense_scores(query_vector), allowed, top, threshold)
