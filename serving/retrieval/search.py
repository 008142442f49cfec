"""Hybrid search over stored chunks: Kiwi-morpheme BM25 and dense cosine, fused by reciprocal rank, with
OpenAI's attribute filters (applied by the caller before ranking) and a score threshold.

Scores: the RRF score divided by the best possible one (first in every ranking used), so in (0, 1]: 1.0 is a
chunk ranked first by both BM25 and the dense model (or by BM25 when no embedding model is served).
``ranking_options.score_threshold`` compares against this.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from serving.retrieval.bm25 import BM25Index
from serving.retrieval.dense import DenseIndex
from serving.retrieval.fusion import reciprocal_rank_fusion
from serving.retrieval.hits import Hit
from serving.retrieval.korean import KoreanMorphemes

RRF_K = 60


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


def hybrid_rank(query: str, terms: Sequence[str], vectors: Sequence[bytes | None], query_vector: np.ndarray | None,
                top: int, threshold: float | None = None) -> list[Hit]:
    """The best ``top`` of the candidate chunks (their stored ``terms`` and float32 ``vectors``) for ``query``,
    by RRF of BM25 and dense cosine (BM25 alone without ``query_vector``); chunks neither method finds (no
    shared term, no vector) are left out; scores normalised to (0, 1] and cut at ``threshold``."""
    if not terms:
        return []
    rankings: list[list[Hit]] = []
    bm25 = BM25Index(list(terms), tokenizer=_StoredTerms())  # type: ignore[arg-type]
    rankings.append(bm25.search([query], k=len(terms))[0])
    if query_vector is not None:
        width = query_vector.shape[-1]
        have = [i for i, v in enumerate(vectors) if v is not None and len(v) == 4 * width]
        if have:
            matrix = np.stack([np.frombuffer(vectors[i], dtype="<f4") for i in have])
            hits = DenseIndex(matrix).search(query_vector.reshape(1, -1), k=len(have))[0]
            rankings.append([Hit(have[h.index], h.score) for h in hits])
    best = len(rankings) / (RRF_K + 1)
    fused = reciprocal_rank_fusion(rankings, k=RRF_K)
    out = [Hit(h.index, round(min(1.0, h.score / best), 6)) for h in fused]
    if threshold is not None:
        out = [h for h in out if h.score >= threshold]
    return out[:top]
