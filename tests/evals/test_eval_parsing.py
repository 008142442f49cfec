"""Generated answers mapped to choices: KoBBQ's reading rules and plain choice matching."""

from __future__ import annotations

from evals.metrics.classification import OUT_OF_CHOICE
from evals.parsing import parse_choice_text, parse_kobbq

OPTIONS = ["손자", "할머니", "알 수 없음"]


def test_kobbq_letters() -> None:
    assert parse_kobbq("A", OPTIONS) == 0
    assert parse_kobbq(" (B) 할머니", OPTIONS) == 1
    assert parse_kobbq("C입니다.", OPTIONS) == 2
    assert parse_kobbq("b", OPTIONS, ["a", "b", "c"]) == 1
    assert parse_kobbq("c: 알 수 없음", OPTIONS, ["a", "b", "c"]) == 2


def test_kobbq_option_text_and_markers() -> None:
    assert parse_kobbq("할머니", OPTIONS) == 1
    assert parse_kobbq("알 수 없습니다.", ["손자", "할머니", "알 수 없음"]) == 2
    assert parse_kobbq("제 생각에 정답은 **B**", OPTIONS) == 1
    assert parse_kobbq("답: '손자'", OPTIONS) == 0


def test_kobbq_out_of_choice() -> None:
    assert parse_kobbq("잘 모르겠어요", OPTIONS) == OUT_OF_CHOICE
    assert parse_kobbq("", OPTIONS) == OUT_OF_CHOICE
    assert parse_kobbq("A: 손자 또는 할머니", OPTIONS) == OUT_OF_CHOICE


def test_choice_text() -> None:
    assert parse_choice_text(" 긍정적인 리뷰", ["부정", "긍정"]) == 1
    assert parse_choice_text("이 문장은 부정", ["부정", "긍정"]) == 0
    assert parse_choice_text("모르겠다", ["부정", "긍정"]) == OUT_OF_CHOICE
    assert parse_choice_text("예 아니오", ["아니오", "예"]) == 1
