"""serving.retrieval on hand-made Korean examples whose right answers are known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from retrieval import BM25Index, DenseIndex, Hit, KoreanMorphemes, mrr, recall_at_k, reciprocal_rank_fusion
from retrieval.dense import rank_candidates

DOCS = [
    "서울은 대한민국의 수도이며 인구가 가장 많은 도시이다.",
    "부산은 해운대 해수욕장으로 유명한 항구 도시이다.",
    "김치는 배추를 소금에 절인 뒤 양념을 버무려 만든다.",
    "제주도는 한라산과 감귤로 잘 알려진 섬이다.",
]


@pytest.fixture(scope="module")
def morphemes() -> KoreanMorphemes:
    return KoreanMorphemes()


def test_morphemes_strip_particles_and_endings(morphemes: KoreanMorphemes):
    terms = morphemes(["서울은", "서울의", "서울에서", "김치를 먹었습니다", "Python으로"])
    assert terms[:3] == [["서울"], ["서울"], ["서울"]]
    assert terms[3] == ["김치", "먹"]
    assert terms[4] == ["python"]
    assert morphemes.terms("") == []


def test_bm25_finds_the_document_despite_different_particles(morphemes: KoreanMorphemes):
    index = BM25Index(DOCS, tokenizer=morphemes)
    queries = ["서울에서 인구가 제일 많나요?", "해운대는 어느 도시에 있어?", "배추로 만드는 음식", "한라산이 있는 섬"]
    hits = index.search(queries, k=4)
    assert [h[0].index for h in hits] == [0, 1, 2, 3]
    assert all(a.score >= b.score for row in hits for a, b in itertools.pairwise(row))
    # "서울에서" shares no whitespace token with "서울은": the hit comes from morphemes.
    assert "서울에서" not in DOCS[0].split()


def test_bm25_leaves_out_documents_without_a_shared_term(morphemes: KoreanMorphemes):
    index = BM25Index(DOCS, tokenizer=morphemes)
    assert index.search(["우주 정거장"], k=3) == [[]]
    assert index.scores("우주").tolist() == [0.0] * 4
    assert BM25Index([], tokenizer=morphemes).search(["서울"]) == [[]]


def test_dense_search_ranks_by_cosine_and_truncates():
    docs = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 5.0]])
    index = DenseIndex(docs)
    hits = index.search(np.array([[0.0, 1.0, 0.0], [3.0, 0.1, 0.0]]), k=2)
    assert [h.index for h in hits[0]] == [1, 2] and hits[0][0].score == pytest.approx(1.0)
    assert [h.index for h in hits[1]] == [0, 2]  # cos 0.999, 0.199 (doc 1: 0.033)
    # Matryoshka: on the first two dimensions document 2 points along (1, 1).
    short = DenseIndex(docs, dims=2).search(np.array([[1.0, 1.0, -9.0]]), k=1)
    assert short[0][0] == Hit(2, pytest.approx(1.0))
    with pytest.raises(ValueError, match="dimensions"):
        index.similarities(np.ones((1, 4)))
    assert [h.index for h in rank_candidates(np.array([0.0, 0.0, 1.0]), docs)] == [2, 0, 1]


def test_rrf_matches_the_formula_and_breaks_ties_by_index():
    bm25 = [Hit(0, 9.0), Hit(1, 5.0), Hit(2, 1.0)]
    dense = [Hit(2, 0.9), Hit(0, 0.8)]
    fused = reciprocal_rank_fusion([bm25, dense], k=60)
    assert [h.index for h in fused] == [0, 2, 1]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert fused[1].score == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2].score == pytest.approx(1 / 62)
    tie = reciprocal_rank_fusion([[Hit(3, 1.0), Hit(1, 0.5)], [Hit(1, 1.0), Hit(3, 0.5)]], k=0, top=1)
    assert tie == [Hit(1, pytest.approx(1.5))]
    weighted = reciprocal_rank_fusion([bm25, dense], k=60, weights=[0.5, 2.0])  # dense trusted more: 2 first
    assert [h.index for h in weighted] == [2, 0, 1]
    assert weighted[0].score == pytest.approx(0.5 / 63 + 2 / 61) and weighted[2].score == pytest.approx(0.5 / 62)
    assert reciprocal_rank_fusion([bm25, dense], weights=[1.0, 0.0]) == reciprocal_rank_fusion([bm25])
    for bad in ([1.0], [1.0, -0.5]):
        with pytest.raises(ValueError, match="weight"):
            reciprocal_rank_fusion([bm25, dense], weights=bad)


def test_hybrid_recovers_what_one_retriever_misses(morphemes: KoreanMorphemes):
    index = BM25Index(DOCS, tokenizer=morphemes)
    bm25 = index.search(["서울 도시"], k=4)[0]  # 서울 and 도시: doc 0 wins, docs 1 also match 도시
    dense = [Hit(0, 0.9), Hit(3, 0.5)]
    fused = reciprocal_rank_fusion([bm25, dense])
    assert fused[0].index == 0 and {h.index for h in fused} == {0, 1, 3}


def test_recall_and_mrr():
    results = [[Hit(2, 1.0), Hit(0, 0.5)], [Hit(1, 1.0)], [Hit(3, 1.0), Hit(4, 0.9), Hit(5, 0.1)]]
    relevant = [{0}, {1}, {5, 7}]
    assert recall_at_k(results, relevant, 1) == pytest.approx(1 / 3)
    assert recall_at_k(results, relevant, 2) == pytest.approx(2 / 3)
    assert recall_at_k(results, relevant, 3) == pytest.approx(1.0)
    assert mrr(results, relevant) == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)
    assert mrr(results, relevant, cutoff=2) == pytest.approx((1 / 2 + 1) / 3)
    with pytest.raises(ValueError):
        recall_at_k(results, relevant[:2], 1)
