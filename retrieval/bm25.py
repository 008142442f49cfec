"""BM25 over Kiwi morphemes, with the ``bm25s`` library's sparse-matrix scorer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval.hits import Hit
from retrieval.korean import KoreanMorphemes


class BM25Index:
    """A BM25 index of a fixed list of documents; ``search`` returns the best ``k`` per query.

    ``k1`` and ``b`` are the usual BM25 constants (term-frequency saturation and length normalisation).
    """

    def __init__(
        self, documents: Sequence[str], k1: float = 1.2, b: float = 0.75, tokenizer: KoreanMorphemes | None = None
    ) -> None:
        import bm25s

        self.tokenizer = tokenizer or KoreanMorphemes()
        self.size = len(documents)
        doc_terms = self.tokenizer(list(documents))
        self._vocab: dict[str, int] = {}
        doc_ids = [[self._vocab.setdefault(term, len(self._vocab)) for term in terms] for terms in doc_terms]
        self._bm25 = bm25s.BM25(k1=k1, b=b)
        if self.size:
            # bm25s takes (token ids per document, vocabulary); the empty string is its placeholder term.
            self._vocab.setdefault("", len(self._vocab))
            self._bm25.index((doc_ids, self._vocab), show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every document for one query (zeros when no query term is indexed)."""
        ids = [self._vocab[t] for t in self.tokenizer.terms(query) if t in self._vocab]
        if not ids or not self.size:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(ids), dtype=np.float32)

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """Top ``k`` documents per query, best first; documents scoring 0 (no shared term) are left out."""
        results = []
        for query in queries:
            scores = self.scores(query)
            results.append(_top_k(scores, k, keep_zero=False))
        return results


def _top_k(scores: np.ndarray, k: int, keep_zero: bool = True) -> list[Hit]:
    """The ``k`` highest scores as hits, best first (ties by lower index)."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return []
    part = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    order = part[np.lexsort((part, -scores[part]))]
    return [Hit(int(i), float(scores[i])) for i in order if keep_zero or scores[i] > 0]
