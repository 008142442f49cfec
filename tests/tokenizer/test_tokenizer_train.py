"""Training: round trips (NFC, Hanja, emoji, code), determinism, special tokens and chat template, back ends."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path

import pytest

from tests.tokenizer.conftest import MIXED_LINES
from tokenizer.train import CONFIG_FILE, TrainConfig, train_tokenizer


def _load(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def _roundtrip(tok, text: str) -> str:
    ids = tok.encode(text, add_special_tokens=False)
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("text", MIXED_LINES)
def test_bpe_round_trips_mixed_text(trained_bpe: Path, text: str) -> None:
    tok = _load(trained_bpe)
    assert _roundtrip(tok, text) == text


def test_unseen_characters_use_bytes_not_unknown(trained_bpe: Path) -> None:
    tok = _load(trained_bpe)
    text = "繁體字 ∮ 🦜 ǅ ᄀᄁ 𝔘𝔫𝔦"  # characters absent from the training text
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.unk_token_id not in ids
    assert _roundtrip(tok, text) == text


def test_decomposed_jamo_is_normalised(trained_bpe: Path) -> None:
    tok = _load(trained_bpe)
    composed = "한국어 문장을 정규화합니다"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert tok.encode(decomposed, add_special_tokens=False) == tok.encode(composed, add_special_tokens=False)
    assert _roundtrip(tok, decomposed) == composed


def test_special_tokens_and_chat_template(trained_bpe: Path) -> None:
    tok = _load(trained_bpe)
    assert tok.eos_token == "<|im_end|>"
    assert tok.pad_token == "<pad>"
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    assert im_start != tok.unk_token_id
    messages = [{"role": "system", "content": "친절하게"}, {"role": "user", "content": "안녕?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    text = tok.decode(ids)
    assert text.endswith("<|im_start|>assistant\n")
    assert ids.count(im_start) == 3
    assert tok.encode("<|im_end|>", add_special_tokens=False) == [tok.eos_token_id]


def test_resolved_config_saved(trained_bpe: Path, korean_corpus: Path) -> None:
    record = json.loads((trained_bpe / CONFIG_FILE).read_text(encoding="utf-8"))
    assert record["config"]["vocab_size"] == 1000
    assert record["config"]["backend"] == "hf"
    assert record["config"]["corpus"] == [str(korean_corpus)]
    lines = [line.strip() for line in korean_corpus.read_text(encoding="utf-8").splitlines()]
    assert record["result"]["corpus_chars"] == sum(len(line) for line in lines)
    assert record["result"]["corpus_texts"] == sum(1 for line in lines if line)


def test_same_corpus_same_tokenizer_json(korean_corpus: Path, trained_bpe: Path, tmp_path: Path) -> None:
    train_tokenizer(TrainConfig(corpus=[str(korean_corpus)], out=str(tmp_path), vocab_size=1000, show_progress=False))
    digest = [hashlib.sha256((d / "tokenizer.json").read_bytes()).hexdigest() for d in (trained_bpe, tmp_path)]
    assert digest[0] == digest[1]


def test_vocab_size_is_respected(trained_bpe: Path) -> None:
    assert len(_load(trained_bpe)) == 1000


@pytest.mark.parametrize(("algorithm", "backend"), [("unigram", "sentencepiece"), ("bpe", "sentencepiece")])
def test_sentencepiece_backends_round_trip(korean_corpus: Path, tmp_path: Path, algorithm: str, backend: str) -> None:
    config = TrainConfig(
        corpus=[str(korean_corpus)],
        out=str(tmp_path),
        vocab_size=1500,
        algorithm=algorithm,
        backend=backend,
        show_progress=False,
    )
    result = train_tokenizer(config)
    tok = _load(result.out)
    for text in [*MIXED_LINES, "繁體字 🦜"]:
        assert _roundtrip(tok, text) == text
        assert tok.unk_token_id not in tok.encode(text, add_special_tokens=False)
    assert tok.eos_token == "<|im_end|>"


def test_sentencepiece_is_deterministic(korean_corpus: Path, tmp_path: Path) -> None:
    digests = []
    for run in ("a", "b"):
        config = TrainConfig(
            corpus=[str(korean_corpus)],
            out=str(tmp_path / run),
            vocab_size=1500,
            algorithm="unigram",
            show_progress=False,
            seed=7,
        )
        train_tokenizer(config)
        digests.append(hashlib.sha256((tmp_path / run / "tokenizer.json").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_kiwi_tokens_do_not_cross_morpheme_boundaries(korean_corpus: Path, tmp_path: Path) -> None:
    pytest.importorskip("kiwipiepy")
    config = TrainConfig(
        corpus=[str(korean_corpus)], out=str(tmp_path), vocab_size=1000, pretokenize="kiwi", show_progress=False
    )
    result = train_tokenizer(config)
    tok = _load(result.out)
    vocab_strings = {tok.convert_tokens_to_string([t]) for t in tok.get_vocab()}
    # "점순이가" is a noun + particle: plain BPE on this story learns it whole, Kiwi-shaped BPE must not.
    assert " 점순이가" not in vocab_strings
    plain = _load(_train_plain(korean_corpus, tmp_path / "plain"))
    assert " 점순이가" in {plain.convert_tokens_to_string([t]) for t in plain.get_vocab()}
    for text in MIXED_LINES:
        assert _roundtrip(tok, text) == text


def _train_plain(corpus: Path, out: Path) -> Path:
    train_tokenizer(TrainConfig(corpus=[str(corpus)], out=str(out), vocab_size=1000, show_progress=False))
    return out


def test_bad_vocab_size_is_a_user_error(korean_corpus: Path, tmp_path: Path) -> None:
    from nexus_k.core.errors import UserError

    with pytest.raises(UserError, match="vocab-size"):
        TrainConfig(corpus=[str(korean_corpus)], out=str(tmp_path), vocab_size=10)
