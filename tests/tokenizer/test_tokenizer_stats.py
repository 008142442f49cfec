"""Stats: the measures counted by hand, side by side through the CLI, and unknown / lossy tokenizers caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nexus_k.cli import app
from tests.tokenizer.conftest import MIXED_LINES, OTHER_KOREAN_LINES
from tokenizer.stats import compare, load_tokenizer, measure

runner = CliRunner()


def _lossy_word_tokenizer():
    """A whitespace word-level tokenizer that knows three words: unknowns, and spaces lost on decode."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<unk>": 0, "영화": 1, "정말": 2, "좋다": 3}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")


def test_measures_match_a_count_by_hand(trained_bpe: Path) -> None:
    tok = load_tokenizer(trained_bpe)
    texts = ["점순이가 닭을 몰고 왔다", "Hello, 세계! 😀"]
    row = measure(tok, texts, "ours", "two lines")
    tokens = sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
    chars = sum(len(t) for t in texts)
    assert (row.tokens, row.chars, row.eojeols, row.texts) == (tokens, chars, 4 + 3, 2)
    assert row.tokens_per_char == round(tokens / chars, 4)
    assert row.tokens_per_eojeol == round(tokens / 7, 4)
    assert row.bytes_per_token == round(sum(len(t.encode()) for t in texts) / tokens, 4)
    assert row.unknown_rate == 0 and row.roundtrip_exact == 1.0
    assert row.vocab_size == 1000


def test_unknown_rate_and_lossy_round_trip_are_reported() -> None:
    row = measure(_lossy_word_tokenizer(), ["영화 정말 좋다", "영화 별로 였다"], "words", "reviews")
    assert row.tokens == 6
    assert row.unknown_rate == pytest.approx(2 / 6, abs=1e-6)
    assert row.roundtrip_exact < 1.0


def test_a_korean_tokenizer_beats_a_story_tokenizer_on_its_text(
    trained_bpe: Path, other_korean_tokenizer: Path
) -> None:
    tokenizers = {"story": load_tokenizer(trained_bpe), "modern": load_tokenizer(other_korean_tokenizer)}
    rows = compare(tokenizers, {"modern": OTHER_KOREAN_LINES, "mixed": MIXED_LINES})
    assert [(r.tokenizer, r.text) for r in rows] == [
        ("story", "modern"),
        ("story", "mixed"),
        ("modern", "modern"),
        ("modern", "mixed"),
    ]
    by_key = {(r.tokenizer, r.text): r for r in rows}
    assert by_key["modern", "modern"].tokens_per_char < by_key["story", "modern"].tokens_per_char
    assert all(r.roundtrip_exact == 1.0 and r.unknown_rate == 0 for r in rows)


def test_stats_cli_json_side_by_side(
    trained_bpe: Path, tiny_model_dir: Path, other_korean_corpus: Path, korean_corpus: Path
) -> None:
    args = [
        "tokenizer",
        "stats",
        "--tokenizer",
        str(trained_bpe),
        "--tokenizer",
        str(tiny_model_dir),
        "--text",
        str(other_korean_corpus),
        "--text",
        str(korean_corpus),
        "--max-texts",
        "5",
    ]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 4 and {r["tokenizer"] for r in rows} == {str(trained_bpe), str(tiny_model_dir)}
    assert all(r["texts"] == 5 for r in rows)
    tok = load_tokenizer(tiny_model_dir)
    first = [line["text"] for line in map(json.loads, other_korean_corpus.read_text(encoding="utf-8").splitlines())][:5]
    row = next(r for r in rows if r["tokenizer"] == str(tiny_model_dir) and r["text"] == str(other_korean_corpus))
    assert row["tokens"] == sum(len(tok.encode(t, add_special_tokens=False)) for t in first)
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "tokens/char" in table.output.replace("\n", "")
