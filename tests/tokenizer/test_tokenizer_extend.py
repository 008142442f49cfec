"""Extend: new Korean tokens with mean-of-pieces embeddings; old tokens, old text and old logits unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nexus_k.cli import app
from nexus_k.core.korean_text import bundled_korean_text
from tests.tokenizer.conftest import MIXED_LINES, OTHER_KOREAN_LINES, write_model
from tokenizer.extend import EXTEND_RECORD, ExtendConfig, extend_model

runner = CliRunner()


def _load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(path)).eval(), AutoTokenizer.from_pretrained(str(path))


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


@pytest.fixture(scope="module")
def untied_base(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Llama with the tiny model's tokenizer and a separate output layer."""
    return write_model(tiny_model_dir, tmp_path_factory.mktemp("untied-base"), tie=False, seed=1)


def assert_extension_keeps_old_behaviour(base: Path, extended: Path, num_new: int, tied: bool) -> list[dict]:
    """Old ids, old text, old rows and old logits unchanged; new rows are the EEVE initialisation."""
    record = json.loads((extended / EXTEND_RECORD).read_text(encoding="utf-8"))
    added = record["tokens"]
    old_model, old_tok = _load(base)
    new_model, new_tok = _load(extended)
    assert 0 < len(added) <= num_new
    assert len(new_tok) == len(old_tok) + len(added) <= new_model.config.vocab_size
    assert new_tok.get_vocab().items() >= old_tok.get_vocab().items()  # every old token keeps its id

    strings = [t["text"] for t in added]
    for token in added:
        assert token["base_ids"] == old_tok.encode(token["text"], add_special_tokens=False)
        assert len(token["base_ids"]) >= 2  # only strings the base tokenizer split are worth a token
        assert new_tok.encode(token["text"], add_special_tokens=False) == [token["token_id"]]

    old_in, new_in = old_model.get_input_embeddings().weight, new_model.get_input_embeddings().weight
    old_out, new_out = old_model.get_output_embeddings().weight, new_model.get_output_embeddings().weight
    rows = old_in.shape[0]
    assert torch.equal(new_in[:rows], old_in) and torch.equal(new_out[:rows], old_out)
    for token in added:
        expected = old_in[token["base_ids"]].mean(dim=0)
        assert torch.allclose(new_in[token["token_id"]], expected, atol=1e-6)
        expected_out = expected if tied else old_out[token["base_ids"][0]]
        assert torch.allclose(new_out[token["token_id"]], expected_out, atol=1e-6)

    untouched = [
        line
        for line in bundled_korean_text().splitlines() + MIXED_LINES
        if line.strip() and not any(s.strip() in line for s in strings)
    ][:6]
    assert untouched
    for text in untouched:
        old_ids = old_tok.encode(text, add_special_tokens=False)
        assert new_tok.encode(text, add_special_tokens=False) == old_ids
        expected = _logits(old_model, old_ids)
        got = _logits(new_model, old_ids)[:, : expected.shape[1]]
        assert torch.allclose(got, expected, atol=1e-5, rtol=0)

    for text in [*OTHER_KOREAN_LINES, *MIXED_LINES]:  # new text uses new ids and still round-trips
        ids = new_tok.encode(text, add_special_tokens=False)
        assert new_tok.decode(ids, clean_up_tokenization_spaces=False) == text
    merged = " ".join(OTHER_KOREAN_LINES)
    assert len(new_tok.encode(merged, add_special_tokens=False)) < len(old_tok.encode(merged, add_special_tokens=False))
    return added


def test_extend_tiny_tied_model_through_cli(tiny_model_dir: Path, other_korean_tokenizer: Path, tmp_path: Path) -> None:
    out = tmp_path / "extended"
    result = runner.invoke(
        app,
        [
            "tokenizer",
            "extend",
            "--model",
            str(tiny_model_dir),
            "--tokenizer",
            str(other_korean_tokenizer),
            "--num-new",
            "40",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "added" in result.output
    added = assert_extension_keeps_old_behaviour(tiny_model_dir, out, 40, tied=True)
    assert len(added) == 40
    model, tok = _load(out)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    chat = tok.apply_chat_template([{"role": "user", "content": "안녕?"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n")


def test_extend_untied_model_ranked_by_corpus(
    untied_base: Path, other_korean_tokenizer: Path, other_korean_corpus: Path, tmp_path: Path
) -> None:
    config = ExtendConfig(
        str(untied_base), str(other_korean_tokenizer), 12, str(tmp_path / "out"), corpus=[str(other_korean_corpus)]
    )
    added = extend_model(config)
    assert [t.text for t in added] == [
        t["text"] for t in assert_extension_keeps_old_behaviour(untied_base, tmp_path / "out", 12, False)
    ]
    # Ranked by use on the corpus: the first added token is used at least as often as the last.
    text = other_korean_corpus.read_text(encoding="utf-8")
    assert text.count(added[0].text.strip()) >= text.count(added[-1].text.strip())
    record = json.loads((tmp_path / "out" / EXTEND_RECORD).read_text(encoding="utf-8"))
    assert record["config"]["num_new"] == 12 and record["added"] == len(added)


def test_extend_with_the_same_tokenizer_adds_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    from nexus_k.core.errors import UserError

    with pytest.raises(UserError, match="no Korean token"):
        extend_model(ExtendConfig(str(tiny_model_dir), str(tiny_model_dir), 5, str(tmp_path / "out")))
