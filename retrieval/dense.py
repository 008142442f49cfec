"""Exact cosine search over numpy vectors (a brute-force matrix product: fine up to ~10^6 x 1024 floats)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval.bm25 import _top_k
from retrieval.hits import Hit


def normalize_rows(vectors: np.ndarray, dims: int | None = None) -> np.ndarray:
    """Float32 rows scaled to unit length, first truncated to ``dims`` (Matryoshka) when given."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {x.shape}")
    if dims is not None:
        x = x[:, :dims]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class DenseIndex:
    """Document vectors kept normalised; ``search`` ranks them by cosine similarity to each query vector."""

    def __init__(self, doc_vectors: np.ndarray, dims: int | None = None) -> None:
        self.dims = dims
        self.vectors = normalize_rows(doc_vectors, dims)

    @property
    def size(self) -> int:
        """Number of indexed documents."""
        return self.vectors.shape[0]

    def similarities(self, query_vectors: np.ndarray) -> np.ndarray:
        """Cosine similarity of every query (rows) to every document (columns)."""
        q = normalize_rows(query_vectors, self.dims)
        if q.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"query vectors have {q.shape[1]} dimensions, documents {self.vectors.shape[1]}")
        return q @ self.vectors.T

    def search(self, query_vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Top ``k`` documents per query vector, best first."""
        sims = self.similarities(query_vectors)
        return [_top_k(row, k) for row in sims]


def rank_candidates(query_vector: np.ndarray, candidate_vectors: np.ndarray) -> list[Hit]:
    """All candidates ordered by cosine similarity to one query (what an embedding-based rerank returns)."""
    index = DenseIndex(candidate_vectors)
    return index.search(np.asarray(query_vector)[None, :], k=index.size)[0]


def as_index_list(hits: Sequence[Hit]) -> list[int]:
    """Document positions of hits, best first."""
    return [h.index for h in hits]
