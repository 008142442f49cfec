"""Pieces of ``nexus-k train embed``: pooling, the InfoNCE loss, hard-negative mining, batching, the CLI's
errors and the bundled data recipe."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from training.embed import info_nce_loss
from training.embed_config import EmbedConfig
from training.embed_data import Pair, mine_hard_negatives
from training.embed_pooling import pool
from training.embed_train import length_grouped_batches


def test_pooling_modes_with_right_and_left_padding():
    hidden = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert pool(hidden, right, "mean").tolist() == [[2.0, 3.0], [9.0, 10.0]]
    assert pool(hidden, right, "last").tolist() == [[4.0, 5.0], [10.0, 11.0]]
    assert pool(hidden, right, "cls").tolist() == [[0.0, 1.0], [8.0, 9.0]]
    assert pool(hidden, left, "last").tolist() == [[6.0, 7.0], [14.0, 15.0]]
    assert pool(hidden, left, "cls").tolist() == [[2.0, 3.0], [12.0, 13.0]]
    with pytest.raises(ValueError):
        pool(hidden, right, "max")


def test_info_nce_value_masking_and_matryoshka():
    q = torch.eye(3)
    d = torch.eye(3)
    # Query i is orthogonal to every other document: logits 1/t on the diagonal, 0 elsewhere.
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert float(info_nce_loss(q, d, 0.5)) == pytest.approx(expected, rel=1e-5)
    docs = torch.cat([torch.eye(3), torch.eye(3)[:1]])  # a duplicate of document 0 as a 4th column
    plain = info_nce_loss(q, docs, 0.5)
    masked = info_nce_loss(q, docs, 0.5, torch.tensor([[False, False, False, True]] + [[False] * 4] * 2))
    # Query 0 scores its duplicate like its own document unless masked; queries 1, 2 see 3 zero logits.
    e2 = math.exp(2)
    others = -math.log(e2 / (e2 + 3))
    assert float(plain) == pytest.approx((-math.log(e2 / (2 * e2 + 2)) + 2 * others) / 3, rel=1e-5)
    assert float(masked) == pytest.approx((expected + 2 * others) / 3, rel=1e-5)
    # On the first dimension only, query 1 and both documents' second rows are zero: logits all 0, so
    # query 0 scores log(1 + e^-1)... the mean over widths [1, 2] is the mean of the two losses.
    q2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    full = float(info_nce_loss(q2, q2, 1.0))
    first = float(info_nce_loss(q2, q2, 1.0, dims=[1]))
    assert float(info_nce_loss(q2, q2, 1.0, dims=[1, 2])) == pytest.approx((full + first) / 2)
    assert first == pytest.approx((-math.log(math.e / (math.e + 1)) + math.log(2)) / 2)


def test_cosent_value_order_and_matryoshka():
    from training.embed import cosent_loss

    first = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    second = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # cosines 1, 0, 1/sqrt(2)
    cos = [1.0, 0.0, 1 / math.sqrt(2)]
    scores = torch.tensor([5.0, 0.0, 3.0])  # already in the cosines' order: only small penalties
    pairs = [(0, 1), (0, 2), (2, 1)]  # (higher, lower) by gold score
    expected = math.log(1 + sum(math.exp(20 * (cos[lo] - cos[hi])) for hi, lo in pairs))
    assert float(cosent_loss(first, second, scores, 20.0)) == pytest.approx(expected, rel=1e-5)
    wrong = torch.tensor([0.0, 5.0, 3.0])  # the reverse order of the first two costs far more
    assert float(cosent_loss(first, second, wrong, 20.0)) > 10 * float(cosent_loss(first, second, scores, 20.0))
    assert float(cosent_loss(first, second, torch.tensor([2.0, 2.0, 2.0]), 20.0)) == pytest.approx(0.0)  # ties
    one = float(cosent_loss(first, second, scores, 20.0, dims=[1]))  # first coordinate: cosines 1, 0, 1
    assert one == pytest.approx(math.log(1 + math.exp(-20) + 1 + math.exp(-20)), rel=1e-5)
    both = float(cosent_loss(first, second, scores, 20.0, dims=[1, 2]))
    assert both == pytest.approx((one + expected) / 2, rel=1e-5)


def test_mining_skips_own_positives_and_respects_the_rank_window():
    pairs = [Pair("q0", "A"), Pair("q0", "B"), Pair("q1", "C", ["D"]), Pair("q2", "D")]

    def ranker(queries, documents, k):  # documents are sorted: A B C D; always rank A, B, C, D
        assert documents == ["A", "B", "C", "D"]
        return [[0, 1, 2, 3][:k] for _ in queries]

    added = mine_hard_negatives(pairs, 1, ranker, rank_from=0, rank_to=4, seed=0)
    assert added == 3  # pair 2 already has one
    assert pairs[0].negatives[0] in {"C", "D"} and pairs[1].negatives[0] in {"C", "D"}
    assert pairs[2].negatives == ["D"]
    assert pairs[3].negatives[0] in {"A", "B", "C"}


def test_bm25_mining_picks_a_lexically_close_other_positive():
    from training.embed_data import bm25_ranker

    pairs = [
        Pair("서울의 인구", "서울은 인구가 가장 많은 도시이다."),
        Pair("서울의 면적", "서울의 면적은 605 제곱킬로미터이다."),
        Pair("김치 만들기", "김치는 배추로 만든다."),
    ]
    assert mine_hard_negatives(pairs, 1, bm25_ranker, rank_from=0, rank_to=5, seed=0) == 2
    assert pairs[0].negatives == ["서울의 면적은 605 제곱킬로미터이다."]
    assert pairs[1].negatives == ["서울은 인구가 가장 많은 도시이다."]
    assert pairs[2].negatives == []  # no other positive shares a term with 김치 만들기


def test_length_grouped_batches_cover_every_pair_once():
    pairs = [Pair(f"q{i}", "x" * (i % 7 + 1)) for i in range(50)]
    batches = length_grouped_batches(pairs, 8, seed=1, window=2)
    seen = [p.query for b in batches for p in b]
    assert sorted(seen) == sorted(p.query for p in pairs) and len(seen) == 50
    assert all(2 <= len(b) <= 8 for b in batches)


def test_config_checks():
    from nexus_k.core.errors import UserError

    with pytest.raises(UserError, match="--pooling"):
        EmbedConfig(base="b", data="d", out="o", pooling="max")
    with pytest.raises(UserError, match="--batch-size"):
        EmbedConfig(base="b", data="d", out="o", batch_size=1)
    assert EmbedConfig(base="b", data="d", out="o", matryoshka_dims=[128, 64, 64]).matryoshka_dims == [64, 128]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "pairs file not found"), ("{oops\n", "line 1: not valid JSON"), ("\n\n", "no pairs")],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, content, message):
    from nexus_k.cli import main

    data = tmp_path / "pairs.jsonl"
    if content is not None:
        data.write_text(content, encoding="utf-8")
    argv = ["nexus-k", "train", "embed", "--base", str(tmp_path), "--data", str(data), "--out", str(tmp_path / "o")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_bundled_recipe_uses_only_licence_clean_sources(shared_data: Path):
    from training.embed_recipe import EmbedRecipe, build_pairs

    recipe = EmbedRecipe(data_dir=str(shared_data), max_per_source={"kornli": 50, "korsts": 20, "boolq": 10})
    pairs, report = build_pairs(recipe)
    assert report["used"] == {"kornli": 50, "korsts": 20, "boolq": 10} and len(pairs) == 80
    names = list(report["source_sha256"])
    assert not any("korquad" in name.lower() or ("test" in name and "xnli" not in name) for name in names)
    assert all(p.query and p.positive for p in pairs)
    again, _ = build_pairs(recipe)
    assert again == pairs


def test_sts_stage_recipe_scores_every_korsts_train_pair(shared_data: Path):
    from training.embed_recipe import STS_STAGE, EmbedRecipe, build_pairs

    recipe = EmbedRecipe(data_dir=str(shared_data), max_per_source=dict(STS_STAGE))
    pairs, report = build_pairs(recipe)
    scored = [p for p in pairs if p.score is not None]
    assert report["used"]["korsts_scored"] == report["available"]["korsts_scored"] == len(scored) > 5000
    assert all(0.0 <= p.score <= 5.0 and not p.negatives for p in scored)
    assert len({round(p.score, 1) for p in scored}) > 20  # graded, not a threshold
    assert len(pairs) - len(scored) == STS_STAGE["kornli"] + STS_STAGE["boolq"]
    assert all("sts-train" in name or "test" not in name or "xnli" in name for name in report["source_sha256"])
