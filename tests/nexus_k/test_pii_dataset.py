"""The labelled Korean PII test set: it is what its builder makes, and the finder meets the target on it."""

from __future__ import annotations

import json

from bench.pii import DATASET, TARGET, evaluate, load
from nexus_k.core.pii import PII_KINDS
from tests.data.pii_ko_build import build


def test_committed_set_is_the_builders_output() -> None:
    assert load() == [json.loads(json.dumps(row, ensure_ascii=False)) for row in build()]
    assert DATASET.is_file()


def test_every_kind_meets_the_target_on_labelled_text() -> None:
    rows = load()
    assert {item["kind"] for row in rows for item in row["pii"]} == set(PII_KINDS)
    scores = evaluate([row for row in rows if row["group"] != "unlabelled"])["per_kind"]
    for kind, score in scores.items():
        assert score["precision"] >= TARGET and score["recall"] >= TARGET, (kind, score)


def test_every_kind_meets_the_target_on_everything() -> None:
    """Unlabelled numbers included: waybill- and reservation-shaped ids, numbers before 건, accounts marked only
    by the words around them."""
    scores = evaluate(load())["per_kind"]
    for kind, score in scores.items():
        assert score["precision"] >= TARGET and score["recall"] >= TARGET, (kind, score)


def test_the_set_holds_the_id_shaped_hard_negatives() -> None:
    negatives = [row["text"] for row in load() if row["group"] == "negative"]
    assert any("(배송중)" in text for text in negatives)
    assert sum(" 건 " in text for text in negatives) >= 6
