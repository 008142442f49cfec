"""The synthetic office documents: answers are copied from the document, negatives lack the article asked."""

from __future__ import annotations

import re

from training.rag_office import ARTICLES, office_items


def _article(question: str):
    return next(a for a in ARTICLES if question in a.questions)


def test_answers_come_from_the_document_and_negatives_lack_the_article() -> None:
    items = office_items(60, 20, seed=3)
    assert [i.holds_answer for i in items] == [True] * 60 + [False] * 20
    assert len({i.group for i in items}) == 80 and len({i.passage for i in items}) == 80
    for item in items:
        article = _article(item.question)
        titles = re.findall(r"^제(\d+)조\(([^)]+)\)", item.passage, flags=re.MULTILINE)
        assert [int(n) for n, _ in titles] == list(range(1, len(titles) + 1)) and 4 <= len(titles) <= 7
        if item.holds_answer:
            clause = next(line for line in item.passage.splitlines() if f"({article.title})" in line)
            numbers = re.findall(r"\d+", item.answer)
            assert numbers and all(n in clause.split(" ", 1)[1] for n in numbers), (item.answer, clause)
        else:
            assert item.answer == "" and f"({article.title})" not in item.passage
        assert "병가" not in item.passage + item.question  # the web UI's live question stays unseen


def test_numbers_vary_and_the_seed_reproduces() -> None:
    assert office_items(5, 2, seed=1) == office_items(5, 2, seed=1)
    answers = {i.answer for i in office_items(200, 0, seed=1)}
    assert len(answers) > 100  # copied from the passage, not memorisable per question
