"""Reciprocal-rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009): score(d) = sum over rankings of
w / (k + rank of d), rank counted from 1, w the ranking's weight (1 in the paper). It needs no score
calibration between BM25 and cosine; the weights say how far to trust each ranking."""

from __future__ import annotations

from collections.abc import Sequence

from retrieval.hits import Hit


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int = 60, top: int | None = None,
                           weights: Sequence[float] | None = None) -> list[Hit]:
    """Fuse several best-first rankings of the same documents; returns hits with the fused score, best first.

    ``k`` = 60 is the paper's constant; a document missing from a ranking gets nothing from it. ``weights``
    (one non-negative number per ranking, default all 1) scale each ranking's share. Ties are broken by the
    lower document index, so the output is deterministic.
    """
    if k < 0:
        raise ValueError("k must be non-negative")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings) or any(w < 0 for w in weights):
        raise ValueError("one non-negative weight per ranking")
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        if weight == 0:
            continue
        for rank, hit in enumerate(ranking, start=1):
            fused[hit.index] = fused.get(hit.index, 0.0) + weight / (k + rank)
    order = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    if top is not None:
        order = order[:top]
    return [Hit(index, score) for index, score in order]
