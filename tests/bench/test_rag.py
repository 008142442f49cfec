"""The pure parts of ``bench.rag``: KorQuAD answer scoring, the grounded prompt, word tokens, the vector cache
and the hybrid-beats-every-method verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.rag_ingest import PAGE_CHARS, pages_of
from bench.rag_qa import char_f1, contains_answer, exact_match, grounded_message, normalize_answer, strip_citations
from bench.rag_retrieval import WordTokens, beats_every_single, cached_vectors


def test_normalisation_drops_quotes_brackets_punctuation_and_case() -> None:
    assert normalize_answer(" 「미네르바」 ") == "미네르바"
    assert normalize_answer("《The  Beatles》.") == "the beatles"
    assert normalize_answer("1,000원") == "1000원"


def test_exact_match_and_character_f1() -> None:
    assert exact_match("'미네르바'", ["미네르바"]) == 1.0
    assert exact_match("미네르바입니다", ["미네르바"]) == 0.0
    # 4 shared characters of 6 predicted and 4 gold: P = 2/3, R = 1: F1 = 0.8.
    assert char_f1("미네르바입니", ["미네르바"]) == pytest.approx(0.8)
    assert char_f1("서울", ["부산", "서울 특별시"]) == pytest.approx(2 * (1 * 2 / 5) / (1 + 2 / 5))
    assert char_f1("", ["미네르바"]) == 0.0
    assert char_f1("가 나", ["가나"]) == 1.0  # spaces are not characters of the answer


def test_contains_and_citations() -> None:
    reply = strip_citations("정답은 미네르바입니다 [1]. 또한 [2, 3] 참고.")
    assert reply == "정답은 미네르바입니다 . 또한  참고."
    assert contains_answer(reply, ["미네르바"]) == 1.0
    assert contains_answer(reply, ["아테나"]) == 0.0


def test_grounded_message_is_file_search_s_layout() -> None:
    from serving.handlers.file_search import SOURCES_INTRO

    text = grounded_message("누가?", [("문서A", "본문 하나"), ("문서B", "본문 둘")])
    assert text == f"{SOURCES_INTRO}\n\n[1] (문서A)\n본문 하나\n\n[2] (문서B)\n본문 둘\n\n질문: 누가?"


def test_word_tokens_keep_particles_attached() -> None:
    assert WordTokens().terms("서울은 서울의 Seoul!") == ["서울은", "서울의", "seoul"]


def test_cached_vectors_resume_and_keep_order(tmp_path: Path) -> None:
    texts = [f"{'가' * (i % 5)}{i}" for i in range(150)]
    calls: list[int] = []

    def encode(batch: list[str]) -> np.ndarray:
        calls.append(len(batch))
        return np.asarray([[len(t), int(t.lstrip("가"))] for t in batch], dtype=np.float32)

    first, spent = cached_vectors(encode, texts, "model", tmp_path)
    assert calls == [64, 64, 22] and spent >= 0
    next(iter(sorted(tmp_path.rglob("block_00001.npy")))).unlink()  # as if a run stopped there
    again, _ = cached_vectors(encode, texts, "model", tmp_path)
    assert calls[3:] == [64] and np.array_equal(first, again)
    assert [int(v[1]) for v in again] == list(range(150))
    cached_vectors(encode, texts, "another model", tmp_path)
    assert len(calls) == 7


def test_hybrid_verdict_needs_every_single_method_beaten() -> None:
    row = {"recall@1": 0.5, "mrr": 0.6}
    metrics = {"bm25_words": row, "bm25_kiwi": {"recall@1": 0.7, "mrr": 0.5}, "dense": row,
               "hybrid": {"recall@1": 0.6, "mrr": 0.7}}
    assert beats_every_single(metrics) == {"recall@1": False, "mrr": True}


def test_pages_hold_about_a_page_of_characters() -> None:
    pages = pages_of(["가" * 600] * 10)
    assert [sum(map(len, p)) for p in pages] == [1800, 1800, 1800, 600]
    assert PAGE_CHARS == 1500
