"""Training pairs for ``nexus-k train embed``: reading and checking the JSONL, and mining hard negatives.

A line is ``{"query": str, "positive": str, "negatives": [str, ...]}`` (``negatives`` optional), or a scored
sentence pair ``{"query": str, "positive": str, "score": number}`` (e.g. KorSTS's 0-5), trained to rank by that
score (CoSENT) rather than as a retrieval pair. Every line is checked before anything is loaded; all problems are
reported in one error.
"""

from __future__ import annotations

import csv
import json
import math
import random
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nexus_k.core.errors import UserError

_MAX_REPORTED = 5

#: ``rank(queries, documents, k)`` -> the best ``k`` document positions per query.
Ranker = Callable[[list[str], list[str], int], list[list[int]]]


@dataclass
class Pair:
    """One training example: a query, the text it should retrieve, and texts it should not."""

    query: str
    """Question, sentence or search string."""
    positive: str
    """The matching passage, answer or paraphrase."""
    negatives: list[str] = field(default_factory=list)
    """Hard negatives: similar-looking texts that do not match (given or mined)."""
    score: float | None = None
    """Graded similarity of ``query`` and ``positive`` (any scale, higher = more similar): a scored pair is
    trained with the CoSENT ranking loss against the other scored pairs of its batch, never as a retrieval pair."""


def _clean(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def _parse_line(line: str) -> Pair:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err.msg})") from err
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    query, positive, negatives = record.get("query"), record.get("positive"), record.get("negatives", [])
    if not isinstance(query, str) or not query.strip():
        raise ValueError('"query" must be a non-empty string')
    if not isinstance(positive, str) or not positive.strip():
        raise ValueError('"positive" must be a non-empty string')
    if isinstance(negatives, str):
        negatives = [negatives]
    if not isinstance(negatives, list) or not all(isinstance(n, str) and n.strip() for n in negatives):
        raise ValueError('"negatives" must be a list of non-empty strings')
    score = record.get("score")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise ValueError('"score" must be a finite number')
        if negatives:
            raise ValueError('a scored pair takes no "negatives"')
        score = float(score)
    return Pair(_clean(query), _clean(positive), [_clean(n) for n in negatives], score)


def read_pairs(path: str | Path) -> list[Pair]:
    """All pairs of a JSONL file; raises one UserError naming the bad lines (blank lines are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pairs file not found: {path}")
    pairs, errors = [], []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                pairs.append(_parse_line(line))
            except ValueError as err:
                errors.append(f"line {number}: {err}")
    if errors:
        more = f" (and {len(errors) - _MAX_REPORTED} more)" if len(errors) > _MAX_REPORTED else ""
        raise UserError(f"{path}: {len(errors)} bad line(s): {'; '.join(errors[:_MAX_REPORTED])}{more}")
    if not pairs:
        raise UserError(f"{path}: no pairs; expected JSONL lines like {{\"query\": ..., \"positive\": ...}}")
    return pairs


def write_pairs(path: str | Path, pairs: list[Pair]) -> None:
    """Write pairs as JSONL (UTF-8, Korean unescaped); ``negatives`` only when there are some."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for p in pairs:
            record: dict = {"query": p.query, "positive": p.positive}
            if p.negatives:
                record["negatives"] = p.negatives
            if p.score is not None:
                record["score"] = p.score
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def mine_hard_negatives(
    pairs: list[Pair],
    wanted: int,
    rank_candidates: Ranker,
    rank_from: int,
    rank_to: int,
    seed: int,
) -> int:
    """Top up each pair's negatives to ``wanted`` with other pairs' positives that rank high for its query.

    ``rank_candidates(queries, documents, k)`` returns the best ``k`` document positions per query (BM25 or
    embeddings). Candidates equal to any positive of the same query are never taken; a random pick from
    ranks ``rank_from`` .. ``rank_to`` leaves out the very top, where unlabelled true answers sit.
    Returns how many negatives were added.
    """
    needy = [i for i, p in enumerate(pairs) if len(p.negatives) < wanted]
    if not needy or wanted == 0:
        return 0
    documents = sorted({p.positive for p in pairs})
    positives_of: dict[str, set[str]] = {}
    for p in pairs:
        positives_of.setdefault(p.query, set()).add(p.positive)
    ranked = rank_candidates([pairs[i].query for i in needy], documents, rank_to)
    rng = random.Random(seed)
    added = 0
    for i, order in zip(needy, ranked, strict=True):
        pair = pairs[i]
        banned = positives_of[pair.query] | set(pair.negatives)
        pool = [documents[j] for j in order[rank_from:rank_to] if documents[j] not in banned]
        if len(pool) < wanted - len(pair.negatives):  # fall back to the top when the tail is short
            pool += [documents[j] for j in order[:rank_from] if documents[j] not in banned and documents[j] not in pool]
        rng.shuffle(pool)
        take = pool[: wanted - len(pair.negatives)]
        pair.negatives.extend(take)
        added += len(take)
    return added


def bm25_ranker(queries: list[str], documents: list[str], k: int) -> list[list[int]]:
    """Best ``k`` document positions per query by Kiwi-morpheme BM25 (for ``mine_hard_negatives``)."""
    from retrieval import BM25Index

    index = BM25Index(documents)
    return [[h.index for h in hits] for hits in index.search(queries, k)]


def embedding_ranker(encode: Callable[[list[str]], np.ndarray]) -> Ranker:
    """A ranker for ``mine_hard_negatives`` from an ``encode(texts) -> vectors`` function (cosine)."""

    def rank(queries: list[str], documents: list[str], k: int) -> list[list[int]]:
        from retrieval import DenseIndex

        index = DenseIndex(encode(documents))
        return [[h.index for h in hits] for hits in index.search(encode(queries), k)]

    return rank


@dataclass
class StsPairs:
    """Sentence pairs with gold similarity scores (KorSTS / STS-B format)."""

    first: list[str]
    """First sentence of each pair."""
    second: list[str]
    """Second sentence of each pair."""
    scores: list[float]
    """Gold similarity, 0-5."""


def read_sts(path: str | Path, limit: int | None = None) -> StsPairs:
    """A KorSTS TSV (header with ``sentence1``, ``sentence2``, ``score``); the first ``limit`` rows."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"STS file not found: {path}")
    first, second, scores = [], [], []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if not reader.fieldnames or not {"sentence1", "sentence2", "score"} <= set(reader.fieldnames):
            raise UserError(f"{path}: expected a TSV header with sentence1, sentence2 and score")
        for row in reader:
            if limit is not None and len(scores) >= limit:
                break
            try:
                score = float(row["score"])
            except (TypeError, ValueError):
                continue
            if row["sentence1"] and row["sentence2"]:
                first.append(_clean(row["sentence1"]))
                second.append(_clean(row["sentence2"]))
                scores.append(score)
    if not scores:
        raise UserError(f"{path}: no scored sentence pairs")
    return StsPairs(first, second, scores)


def cosine_spearman(first: np.ndarray, second: np.ndarray, gold: list[float]) -> float:
    """Spearman correlation between the row-wise cosine of two vector arrays and the gold scores."""
    from scipy.stats import spearmanr

    a = first / np.maximum(np.linalg.norm(first, axis=1, keepdims=True), 1e-12)
    b = second / np.maximum(np.linalg.norm(second, axis=1, keepdims=True), 1e-12)
    return float(spearmanr((a * b).sum(axis=1), gold).statistic)


def sts_spearman(sts: StsPairs, encode: Callable[[list[str]], np.ndarray]) -> float:
    """Spearman correlation between cosine similarity of the embedded pairs and the gold scores."""
    return cosine_spearman(encode(sts.first), encode(sts.second), sts.scores)
