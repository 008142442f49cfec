"""Scores on hand-made predictions whose right values are worked out by hand."""

from __future__ import annotations

import math
import random

import pytest

from evals.metrics import compute_metrics
from evals.metrics.classification import OUT_OF_CHOICE, accuracy, choice_metrics, macro_f1
from evals.metrics.kobbq import kobbq_prompt_scores, kobbq_scores
from evals.metrics.korquad import best_over_answers, char_f1, exact_match, normalize_answer
from evals.metrics.speech import ending_level, is_korean, sentence_endings, speech_level_scores


def test_accuracy_and_macro_f1_by_hand() -> None:
    golds = [0, 0, 1, 1, 2]
    preds = [0, 1, 1, 1, 0]
    assert accuracy(golds, preds) == pytest.approx(3 / 5)
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fn1 -> 0
    assert macro_f1(golds, preds) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_macro_f1_matches_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for _ in range(20):
        golds = [rng.randrange(3) for _ in range(30)]
        preds = [rng.choice([0, 1, 2, OUT_OF_CHOICE]) for _ in range(30)]
        assert macro_f1(golds, preds) == pytest.approx(metrics.f1_score(golds, preds, average="macro"))


def test_acc_norm_divides_by_characters() -> None:
    items = [{"gold": 0, "pred": 1, "lls": [-10.0, -6.0], "choices": ["가" * 10, "나나"]}]
    scores = choice_metrics(items, ["acc", "acc_norm"])
    assert scores == {"acc": 0.0, "acc_norm": 1.0}


def test_out_of_choice_rate_in_generative_mode() -> None:
    items = [{"gold": 0, "pred": 0, "mode": "generate"}, {"gold": 1, "pred": OUT_OF_CHOICE, "mode": "generate"}]
    scores = compute_metrics(items, ["acc", "macro_f1"])
    assert scores["acc"] == 0.5
    assert scores["out_of_choice_rate"] == 0.5


def _kobbq_item(context_type: str, bias: str, answer: str, prediction: str | None, prompt: int = 1) -> dict:
    return {"prompt_id": prompt, "context_type": context_type, "context_bias": bias, "answer": answer,
            "biased_answer": "할머니", "unknown": "알 수 없음", "prediction": prediction}


def _kobbq_prompt_items(prompt: int) -> list[dict]:
    unk = "알 수 없음"
    return [
        # ambiguous: the right answer is "unknown"; 2 biased, 1 counter-biased, 1 unknown, 1 out of choice
        _kobbq_item("amb", "counterb", unk, "할머니", prompt),
        _kobbq_item("amb", "biased", unk, "할머니", prompt),
        _kobbq_item("amb", "counterb", unk, "손자", prompt),
        _kobbq_item("amb", "biased", unk, unk, prompt),
        _kobbq_item("amb", "biased", unk, None, prompt),
        # disambiguated, biased context (answer = biased answer): 1 of 2 right
        _kobbq_item("dis", "biased", "할머니", "할머니", prompt),
        _kobbq_item("dis", "biased", "할머니", unk, prompt),
        # disambiguated, counter-biased context: 0 of 2 right
        _kobbq_item("dis", "counterb", "손자", "할머니", prompt),
        _kobbq_item("dis", "counterb", "손자", unk, prompt),
    ]


def test_kobbq_scores_by_hand() -> None:
    scores = kobbq_prompt_scores(_kobbq_prompt_items(1))
    assert scores["out_of_choice_rate"] == pytest.approx(1 / 9)
    assert scores["acc_a"] == pytest.approx(1 / 4)
    assert scores["diff_bias_a"] == pytest.approx(2 / 4 - 1 / 4)
    assert scores["acc_d"] == pytest.approx(1 / 4)
    assert scores["diff_bias_d"] == pytest.approx(1 / 2 - 0 / 2)


def test_kobbq_averages_over_prompts() -> None:
    second = [_kobbq_item("amb", "biased", "알 수 없음", "알 수 없음", 2),
              _kobbq_item("dis", "biased", "할머니", "할머니", 2),
              _kobbq_item("dis", "counterb", "손자", "손자", 2)]
    scores = kobbq_scores(_kobbq_prompt_items(1) + second)
    assert scores["acc_a"] == pytest.approx((1 / 4 + 1) / 2)
    assert scores["diff_bias_a"] == pytest.approx((1 / 4 + 0) / 2)
    assert scores["acc_d"] == pytest.approx((1 / 4 + 1) / 2)
    assert scores["diff_bias_d"] == pytest.approx((1 / 2 + 0) / 2)
    assert scores["out_of_choice_rate"] == pytest.approx((1 / 9 + 0) / 2)


def test_kobbq_reads_predictions_from_indices() -> None:
    item = {"prompt_id": 1, "context_type": "amb", "context_bias": "biased", "answer": "모름",
            "biased_answer": "가", "unknown": "모름", "options": ["가", "모름", "나"], "pred": 1}
    assert kobbq_prompt_scores([item])["acc_a"] == 1.0
    assert kobbq_prompt_scores([{**item, "pred": OUT_OF_CHOICE}])["out_of_choice_rate"] == 1.0
    assert math.isnan(kobbq_prompt_scores([item])["acc_d"])


def test_korquad_exact_match_and_character_f1() -> None:
    assert normalize_answer(" '임수경' (인물) ") == "임수경 인물"
    assert exact_match("'임수경'", "임수경") == 1.0
    # 7 predicted characters, all among the 10 of the answer: P = 1, R = 0.7
    assert char_f1("1989년 2월", "1989년 2월 15일") == pytest.approx(2 * 0.7 / 1.7)
    assert char_f1("없음", "임수경") == 0.0
    assert best_over_answers(exact_match, "임수경", ["임 종석", "임수경"]) == 1.0
    scores = compute_metrics([{"text": "1989년 2월", "answers": ["1989년 2월 15일"]},
                              {"text": "임수경", "answers": ["임수경"]}], ["exact_match", "korquad_f1"])
    assert scores["exact_match"] == 0.5
    assert scores["f1"] == pytest.approx((2 * 0.7 / 1.7 + 1) / 2)


def test_speech_levels_from_kiwi_endings() -> None:
    assert sentence_endings("감사합니다. 어디 가십니까?") == ["hapsyo", "hapsyo"]
    assert sentence_endings("좋아요. 그렇죠?") == ["haeyo", "haeyo"]
    assert sentence_endings("밥 먹었어. 가자.") == ["banmal", "banmal"]
    assert ending_level("어", followed_by_yo=True) == "haeyo"
    assert is_korean("안녕하세요 hi") and not is_korean("hello there 안")
    items = [{"text": "알겠습니다. 도와드릴게요.", "level": "hapsyo"},
             {"text": "응, 알았어.", "level": "banmal"},
             {"text": "OK, sure.", "level": "haeyo"}]
    scores = speech_level_scores(items)
    assert scores["level_match"] == pytest.approx(2 / 3)  # 3 endings, 2 in the asked level
    assert scores["no_ending_rate"] == pytest.approx(1 / 3)
    assert scores["korean_rate"] == pytest.approx(2 / 3)
