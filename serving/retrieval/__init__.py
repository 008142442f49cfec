"""Retrieval building blocks for vector stores and reranking: Kiwi-morpheme BM25, dense cosine search over
numpy vectors, reciprocal-rank fusion and the retrieval metrics the benchmarks report.

No model or HTTP code here: callers embed texts themselves (an engine, ``training.embed.Embedder``) and pass
the vectors in.
"""

from serving.retrieval.bm25 import BM25Index
from serving.retrieval.dense import DenseIndex
from serving.retrieval.fusion import reciprocal_rank_fusion
from serving.retrieval.hits import Hit
from serving.retrieval.korean import KoreanMorphemes
from serving.retrieval.metrics import mrr, recall_at_k

__all__ = [
    "BM25Index",
    "DenseIndex",
    "Hit",
    "KoreanMorphemes",
    "mrr",
    "recall_at_k",
    "reciprocal_rank_fusion",
]
