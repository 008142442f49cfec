"""The one result type of every search here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Hit:
    """One retrieved document: its position in the indexed list and the retriever's score (higher is better)."""

    index: int
    """Position of the document in the list that was indexed."""
    score: float
    """BM25 score, cosine similarity or fused RRF score; comparable only within one retriever."""
