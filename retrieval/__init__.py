"""Retrieval building blocks, below training and serving (embedding training mines hard negatives with them;
vector stores search with them): Kiwi-morpheme BM25, dense cosine search over
numpy vectors, reciprocal-rank fusion and the retrieval metrics the benchmarks report.

No model or HTTP code here: callers embed texts themselves (an engine, ``training.embed.Embedder``) and pass
the vectors in.
"""

from retrieval.bm25 import BM25Index
from retrieval.dense import DenseIndex
from retrieval.fusion import reciprocal_rank_fusion
from retrieval.hits import Hit
from retrieval.korean import KoreanMorphemes
from retrieval.metrics import mrr, recall_at_k

__all__ = [
    "BM25Index",
    "DenseIndex",
    "Hit",
    "KoreanMorphemes",
    "mrr",
    "recall_at_k",
    "reciprocal_rank_fusion",
]
