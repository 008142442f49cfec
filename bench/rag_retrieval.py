"""Retrieval part of ``bench.rag``: held-out Korean questions searched over all of their documents with each
method the product has (word BM25, Kiwi-morpheme BM25, dense, hybrid RRF, hybrid + rerank).

Corpora: every unique KorQuAD 1.0 dev context (a question's gold document is the context it was written on;
evaluation only) and every KoBEST BoolQ test passage (gold: its passage). Questions are a seeded sample unless
``--full``. The hybrid is the vector store's own search (``serving.retrieval.search``: stored Kiwi terms, BM25
and cosine each cut to 200, RRF k = 60); dense vectors are the bundled embedding model's, cached on disk.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval import BM25Index, Hit, mrr, recall_at_k
from retrieval.bm25 import _top_k
from retrieval.dense import rank_candidates
from serving.retrieval.search import ChunkIndex, HybridWeights, fuse, search_terms

log = logging.getLogger("bench.rag")
DEPTH = 100
"""Hits kept per query and method (MRR is computed within them)."""
BLOCK = 64
"""Texts per cached block of vectors (a stopped run resumes at the first missing block)."""
TEXT_WEIGHTS = (2.0, 4.0)
"""BM25 weights (dense 1) reported beside the equal-weight hybrid: ``ranking_options.hybrid_search``."""


@dataclass
class Task:
    """Documents, queries and each query's relevant document positions."""

    name: str
    documents: list[str]
    queries: list[str]
    relevant: list[set[int]]
    titles: list[str]
    """A name per document (the Wikipedia article for KorQuAD), used as the source's filename in QA prompts."""
    answers: list[list[str]]
    """Gold answers per query (KorQuAD), empty for BoolQ."""


def korquad_task(data_dir: Path, limit: int | None, seed: int) -> Task:
    """All unique KorQuAD 1.0 dev contexts; a seeded sample of ``limit`` questions (all with ``None``)."""
    data = json.loads((data_dir / "korquad_v1" / "KorQuAD_v1.0_dev.json").read_text(encoding="utf-8"))
    documents: dict[str, int] = {}
    titles: list[str] = []
    items = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            if paragraph["context"] not in documents:
                documents[paragraph["context"]] = len(documents)
                titles.append(article["title"])
            position = documents[paragraph["context"]]
            items += [(qa["question"], position, [a["text"] for a in qa["answers"]]) for qa in paragraph["qas"]]
    if limit is not None and limit < len(items):
        items = random.Random(seed).sample(items, limit)
    return Task("korquad", list(documents), [q for q, _, _ in items], [{p} for _, p, _ in items], titles,
                [a for _, _, a in items])


def boolq_task(data_dir: Path, limit: int | None, seed: int) -> Task:
    """All KoBEST BoolQ test passages; a seeded sample of ``limit`` questions (all with ``None``)."""
    with (data_dir / "kobest" / "BoolQ" / "test.tsv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    documents = sorted({r["Text"] for r in rows})
    position = {text: i for i, text in enumerate(documents)}
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return Task("boolq", documents, [r["Question"] for r in rows], [{position[r["Text"]]} for r in rows],
                [f"boolq-{i}" for i in range(len(documents))], [[] for _ in rows])


class WordTokens:
    """BM25 without morphology: NFC, lower-cased word tokens (``\\w+``), so 서울은 and 서울의 stay different terms."""

    def __call__(self, texts: list[str]) -> list[list[str]]:
        return [self.terms(t) for t in texts]

    def terms(self, text: str) -> list[str]:
        """Word tokens of one text."""
        return re.findall(r"\w+", unicodedata.normalize("NFC", text).lower())


def scores(results: Sequence[Sequence[Hit]], relevant: Sequence[set[int]]) -> dict[str, float]:
    """recall@1/5/10 and MRR (within the hits kept)."""
    out = {f"recall@{k}": round(recall_at_k(results, relevant, k), 4) for k in (1, 5, 10)}
    out["mrr"] = round(mrr(results, relevant), 4)
    return out


def ranking(values: np.ndarray, positive: bool = False) -> list[Hit]:
    """The best ``DEPTH`` documents by ``values`` (only those above 0 when ``positive``: BM25's no-match)."""
    return _top_k(values, DEPTH, keep_zero=not positive)


# --------------------------------------------------------------------------------------------- vectors


def model_fingerprint(model_dir: Path, max_length: int) -> str:
    """What the vectors depend on besides the texts: the model folder, its weights' size and merge record."""
    weights = model_dir / "model.safetensors"
    merge = model_dir / "nexus_k_merge.json"
    parts = [str(model_dir.resolve()), str(weights.stat().st_size) if weights.is_file() else "",
             merge.read_text(encoding="utf-8") if merge.is_file() else "", str(max_length)]
    return "\n".join(parts)


def cached_vectors(encode: Callable[[list[str]], np.ndarray], texts: list[str], fingerprint: str,
                   cache: Path) -> tuple[np.ndarray, float]:
    """Vectors of ``texts`` under ``cache``/<sha256 of model and texts>/, one .npy per block of ``BLOCK`` texts in
    length order (so a block pads little); blocks already there are read, not embedded. Returns the vectors and
    the seconds spent embedding in this call."""
    digest = hashlib.sha256((fingerprint + "\x00" + "\x00".join(texts)).encode("utf-8")).hexdigest()[:24]
    folder = cache / digest
    folder.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    blocks = []
    spent = 0.0
    for number, start in enumerate(range(0, len(order), BLOCK)):
        path = folder / f"block_{number:05d}.npy"
        if path.is_file():
            blocks.append(np.load(path))
            continue
        started = time.perf_counter()
        block = np.asarray(encode([texts[i] for i in order[start:start + BLOCK]]), dtype=np.float32)
        spent += time.perf_counter() - started
        np.save(path.with_suffix(".tmp.npy"), block)
        path.with_suffix(".tmp.npy").rename(path)
        blocks.append(block)
        if number % 4 == 0:
            log.info("embedded %d / %d texts into %s", min(start + BLOCK, len(texts)), len(texts), folder.name)
    stacked = np.concatenate(blocks) if blocks else np.zeros((0, 0), dtype=np.float32)
    out = np.empty_like(stacked)
    out[order] = stacked
    return out, spent


# ------------------------------------------------------------------------------------------------ run


def retrieve(task: Task, doc_vectors: np.ndarray, query_vectors: np.ndarray,
             rerank: Callable[[int, list[int]], list[float]], rerank_depth: int) -> tuple[dict, dict, list]:
    """Every method's metrics on ``task``, seconds per stage, and the hybrid hits (for the QA part)."""
    timing: dict[str, float] = {}
    started = time.perf_counter()
    words = BM25Index(task.documents, tokenizer=WordTokens())  # type: ignore[arg-type]
    word_hits = [ranking(words.scores(q), positive=True) for q in task.queries]
    timing["bm25_words_s"] = round(time.perf_counter() - started, 2)

    started = time.perf_counter()
    # The vector store's own index: Kiwi terms as ingestion stores them, vectors as float32 bytes.
    index = ChunkIndex(search_terms(task.documents), [v.astype("<f4").tobytes() for v in doc_vectors])
    timing["kiwi_index_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    bm25 = [index.bm25_scores(q) for q in task.queries]
    timing["bm25_kiwi_queries_s"] = round(time.perf_counter() - started, 2)
    dense = [index.dense_scores(v) for v in query_vectors]
    allowed = np.ones(index.size, dtype=bool)
    kiwi_hits = [ranking(s, positive=True) for s in bm25]
    dense_hits = [ranking(s) for s in dense]
    hybrid_hits = [fuse(b, d, allowed, DEPTH) for b, d in zip(bm25, dense, strict=True)]

    started = time.perf_counter()
    reranked = []
    for number, hits in enumerate(hybrid_hits):
        head = [h.index for h in hits[:rerank_depth]]
        values = rerank(number, head)
        order = sorted(range(len(head)), key=lambda i: (-values[i], i))
        reranked.append([Hit(head[i], values[i]) for i in order] + list(hits[rerank_depth:]))
    timing["rerank_s"] = round(time.perf_counter() - started, 2)
    metrics = {"bm25_words": scores(word_hits, task.relevant), "bm25_kiwi": scores(kiwi_hits, task.relevant),
               "dense": scores(dense_hits, task.relevant), "hybrid": scores(hybrid_hits, task.relevant),
               "hybrid_rerank": scores(reranked, task.relevant)}
    for weight in TEXT_WEIGHTS:
        weighted = [fuse(b, d, allowed, DEPTH, weights=HybridWeights(text=weight))
                    for b, d in zip(bm25, dense, strict=True)]
        metrics[f"hybrid_text_x{weight:g}"] = scores(weighted, task.relevant)
    return metrics, timing, hybrid_hits


def cosine_reranker(doc_vectors: np.ndarray, query_vectors: np.ndarray) -> Callable[[int, list[int]], list[float]]:
    """Rerank by the embedding model (what ``/v1/rerank`` does when it names an embedding model)."""

    def rerank(query: int, candidates: list[int]) -> list[float]:
        if not candidates:
            return []
        hits = rank_candidates(query_vectors[query], doc_vectors[candidates])
        out = [0.0] * len(candidates)
        for hit in hits:
            out[hit.index] = hit.score
        return out

    return rerank


def beats_every_single(metrics: dict, hybrid: str = "hybrid") -> dict[str, bool]:
    """Per metric: whether ``hybrid`` is strictly above BM25 (both kinds) and dense (the issue's target)."""
    singles = ("bm25_words", "bm25_kiwi", "dense")
    return {m: all(metrics[hybrid][m] > metrics[s][m] for s in singles) for m in metrics[hybrid]}
