"""Trim: the kept vocabulary encodes kept text to the same tokens (renumbered) and the model gives the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nexus_k.cli import app
from nexus_k.core.errors import UserError
from nexus_k.core.korean_text import bundled_korean_text
from tests.tokenizer.conftest import MIXED_LINES
from tokenizer.trim import TRIM_RECORD, TrimConfig, trim_model

runner = CliRunner()
UNSEEN = "繁體字 🦜 quantum computing ∮ 𝔘𝔫𝔦 — 완전히 새로운 낱말들"


def _story_lines(count: int) -> list[str]:
    return [line.strip() for line in bundled_korean_text().splitlines() if line.strip()][:count]


def _load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(path)).eval(), AutoTokenizer.from_pretrained(str(path))


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def assert_trim_is_exact(original: Path, trimmed: Path, texts: list[str]) -> dict:
    """Same tokens (through the id mapping) and same logits on ``texts``; unseen text still round-trips."""
    record = json.loads((trimmed / TRIM_RECORD).read_text(encoding="utf-8"))
    kept = record["kept_ids"]
    mapping = {old: new for new, old in enumerate(kept)}
    old_model, old_tok = _load(original)
    new_model, new_tok = _load(trimmed)

    assert len(new_tok) == len(kept) < len(old_tok)
    assert new_model.get_input_embeddings().weight.shape[0] == len(kept) == new_model.config.vocab_size
    assert new_model.get_output_embeddings().weight.shape[0] == len(kept)
    for text in texts:
        old_ids = old_tok.encode(text, add_special_tokens=False)
        new_ids = new_tok.encode(text, add_special_tokens=False)
        assert new_ids == [mapping[i] for i in old_ids], text
        expected = _logits(old_model, old_ids)[:, kept]
        got = _logits(new_model, new_ids)
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), (text, (got - expected).abs().max())
        assert torch.equal(got.argmax(-1), expected.argmax(-1))
    for text in [UNSEEN, *MIXED_LINES]:  # text outside the corpus falls back to bytes, never to <unk>
        ids = new_tok.encode(text, add_special_tokens=False)
        assert new_tok.unk_token_id not in ids
        assert new_tok.decode(ids, clean_up_tokenization_spaces=False) == text
    assert new_tok.convert_ids_to_tokens(new_tok.eos_token_id) == old_tok.eos_token
    assert new_model.config.eos_token_id == mapping[old_model.config.eos_token_id]
    assert new_model.config.pad_token_id == new_tok.pad_token_id
    return record


def test_trim_tiny_model_through_cli(tiny_model_dir: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    lines = _story_lines(12)
    corpus.write_text("\n".join(lines), encoding="utf-8")
    out = tmp_path / "trimmed"
    result = runner.invoke(
        app, ["tokenizer", "trim", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "max |diff|" in result.output and "argmax agreement 100.0%" in result.output
    record = assert_trim_is_exact(tiny_model_dir, out, lines)
    report = record["report"]
    assert report["parameters_after"] < report["parameters_before"]
    assert report["parameter_cut"] == pytest.approx(
        1 - report["parameters_after"] / report["parameters_before"], abs=1e-4
    )
    assert report["max_logit_diff"] <= 1e-5 and report["argmax_agreement"] == 1.0
    assert record["config"]["corpus"] == [str(corpus)]
    # Tied embeddings stay tied: the output layer is the trimmed input embedding.
    model, tok = _load(out)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    chat = tok.apply_chat_template([{"role": "user", "content": "안녕?"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("algorithm", ["bpe", "unigram"])
def test_trim_sentencepiece_untied_models(
    sentencepiece_models: dict[str, Path], tmp_path: Path, algorithm: str
) -> None:
    lines = _story_lines(10)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines), encoding="utf-8")
    report = trim_model(TrimConfig(str(sentencepiece_models[algorithm]), [str(corpus)], str(tmp_path / "out")))
    assert report.vocab_after < report.vocab_before
    assert report.max_logit_diff is not None and report.max_logit_diff <= 1e-5
    record = assert_trim_is_exact(sentencepiece_models[algorithm], tmp_path / "out", lines)
    # Byte-fallback tokens are always kept, so every byte stays encodable.
    vocab = json.loads((tmp_path / "out" / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    pieces = set(vocab) if algorithm == "bpe" else {piece for piece, _score in vocab}
    assert {f"<0x{b:02X}>" for b in range(256)} <= pieces
    assert record["report"]["used_tokens"] <= record["report"]["vocab_after"]


def test_trim_keeps_what_a_bigger_corpus_uses(tiny_model_dir: Path, tmp_path: Path) -> None:
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text("\n".join(_story_lines(3)), encoding="utf-8")
    large.write_text("\n".join(_story_lines(30)), encoding="utf-8")
    reports = [trim_model(TrimConfig(str(tiny_model_dir), [str(c)], str(tmp_path / c.stem))) for c in (small, large)]
    assert reports[0].vocab_after < reports[1].vocab_after
    assert reports[0].used_tokens < reports[1].used_tokens


def test_trim_to_a_token_id_file_keeps_the_same_vocabulary(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A recorded id list (what the demo ships) trims exactly as the corpus it came from, chat turns included."""
    from transformers import AutoTokenizer

    from tokenizer.trim import read_token_ids, used_token_ids, vocab_sha256

    lines = _story_lines(12)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines), encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = json.loads(tok.backend_tokenizer.to_str())
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps({"vocab_sha256": vocab_sha256(data),
                                    "used_token_ids": sorted(used_token_ids(tok, lines))}))
    from_corpus = trim_model(TrimConfig(str(tiny_model_dir), [str(corpus)], str(tmp_path / "a")))
    result = runner.invoke(app, ["tokenizer", "trim", "--model", str(tiny_model_dir), "--token-ids", str(ids_file),
                                 "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "b" / TRIM_RECORD).read_text(encoding="utf-8"))
    assert record["report"]["kept_ids_sha256"] == from_corpus.kept_ids_sha256
    assert record["kept_ids"] == json.loads((tmp_path / "a" / TRIM_RECORD).read_text(encoding="utf-8"))["kept_ids"]
    assert_trim_is_exact(tiny_model_dir, tmp_path / "b", lines)
    # the chat template's own tokens (turn markers, role names) are kept whatever the corpus
    mapping = {old: new for new, old in enumerate(record["kept_ids"])}
    trimmed = AutoTokenizer.from_pretrained(tmp_path / "b")
    messages = [{"role": "system", "content": lines[0]}, {"role": "user", "content": lines[1]}]
    before = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert trimmed.encode(before, add_special_tokens=False) == [mapping[i] for i in tok.encode(
        before, add_special_tokens=False)]

    data["model"]["vocab"] = {("x" + t if i == 300 else t): i for t, i in data["model"]["vocab"].items()}
    with pytest.raises(UserError, match="another vocabulary"):
        read_token_ids(ids_file, data)


def test_trim_needs_a_corpus_or_token_ids(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["tokenizer", "trim", "--model", str(tiny_model_dir), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError) and "--token-ids" in str(result.exception)
