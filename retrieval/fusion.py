"""Reciprocal-rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009): score(d) = sum over rankings of
1 / (k + rank of d), rank counted from 1. It needs no score calibration between BM25 and cosine."""

from __future__ import annotations

from collections.abc import Sequence

from retrieval.hits import Hit


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int = 60, top: int | None = None) -> list[Hit]:
    """Fuse several best-first rankings of the same documents; returns hits with the fused score, best first.

    ``k`` = 60 is the paper's constant; a document missing from a ranking gets nothing from it. Ties are
    broken by the lower document index, so the output is deterministic.
    """
    if k < 0:
        raise ValueError("k must be non-negative")
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            fused[hit.index] = fused.get(hit.index, 0.0) + 1.0 / (k + rank)
    order = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    if top is not None:
        order = order[:top]
    return [Hit(index, score) for index, score in order]
