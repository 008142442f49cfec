"""Retrieval metrics over best-first hit lists, one relevant set per query."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from retrieval.hits import Hit


def recall_at_k(results: Sequence[Sequence[Hit]], relevant: Sequence[Collection[int]], k: int) -> float:
    """Fraction of queries with at least one relevant document among their first ``k`` hits."""
    _check(results, relevant)
    found = sum(any(h.index in rel for h in hits[:k]) for hits, rel in zip(results, relevant, strict=True))
    return found / len(results)


def mrr(results: Sequence[Sequence[Hit]], relevant: Sequence[Collection[int]], cutoff: int | None = None) -> float:
    """Mean reciprocal rank of the first relevant hit (0 for a query whose hits hold none within ``cutoff``)."""
    _check(results, relevant)
    total = 0.0
    for hits, rel in zip(results, relevant, strict=True):
        for rank, hit in enumerate(hits[:cutoff] if cutoff else hits, start=1):
            if hit.index in rel:
                total += 1.0 / rank
                break
    return total / len(results)


def _check(results: Sequence, relevant: Sequence) -> None:
    if len(results) != len(relevant):
        raise ValueError(f"{len(results)} result lists but {len(relevant)} relevant sets")
    if not results:
        raise ValueError("no queries")
