"""Small Korean corpora and a trained tokenizer shared by the tokenizer tests (built locally, no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus_k.core.korean_text import bundled_korean_text

# Mixed text the round-trip tests use: Hangul, Hanja, emoji, English, code, odd spacing.
MIXED_LINES = [
    "대한민국(大韓民國)의 수도는 서울이다.",
    "오늘 날씨 정말 좋네요 😀👍🏽 ㅋㅋㅋ",
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b  # 더하기",
    "가격은 12,500원이고 재고는 3개 남았습니다!!",
    "  앞뒤 공백과\t탭도   그대로  ",
    "수식: x² + y² = r², 화살표 → ⇒, 한자 學校",
]


@pytest.fixture(scope="session")
def korean_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled public-domain story plus the mixed lines, as a plain-text corpus file."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(bundled_korean_text() + "\n" + "\n".join(MIXED_LINES) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_bpe(korean_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1,000-token byte-level BPE tokenizer trained on ``korean_corpus``."""
    from tokenizer.train import TrainConfig, train_tokenizer

    out = tmp_path_factory.mktemp("bpe")
    train_tokenizer(TrainConfig(corpus=[str(korean_corpus)], out=str(out), vocab_size=1000, show_progress=False))
    return out


# Modern Korean on other topics than the bundled 1930s story: its frequent words are missing from the tiny
# model's vocabulary, so a tokenizer trained on it has pieces worth adding (extend tests).
OTHER_KOREAN_LINES = [
    "인공지능 기술이 빠르게 발전하면서 한국어 언어모델에 대한 관심이 높아지고 있습니다.",
    "정부는 올해 디지털 정부 예산을 늘리고 공공기관의 데이터 개방을 확대하기로 했습니다.",
    "내일은 전국이 대체로 맑겠으나 오후부터 남부지방에 비가 내리겠습니다.",
    "이 영화는 배우들의 연기가 훌륭하고 음악도 정말 좋았습니다. 강력히 추천합니다.",
    "서울특별시는 대중교통 요금을 동결하고 심야버스 노선을 확대한다고 발표했습니다.",
    "학생들은 인공지능 수업에서 언어모델의 원리와 데이터의 중요성을 배웠습니다.",
    "고객센터 상담원이 친절하게 안내해 주셔서 문제를 빠르게 해결했습니다.",
    "경제 전문가들은 내년 수출이 반도체를 중심으로 회복될 것으로 전망했습니다.",
]


def write_model(tokenizer_dir: Path, out: Path, *, tie: bool, seed: int = 0) -> Path:
    """A random-weight two-layer Llama around the tokenizer in ``tokenizer_dir`` (saved to ``out``)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def other_korean_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:data:`OTHER_KOREAN_LINES`, a few times over, as a JSONL corpus (field ``text``)."""
    import json

    path = tmp_path_factory.mktemp("other") / "other.jsonl"
    lines = [json.dumps({"text": line}, ensure_ascii=False) for line in OTHER_KOREAN_LINES * 4]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def other_korean_tokenizer(other_korean_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE tokenizer trained on :data:`OTHER_KOREAN_LINES` (all ~650 merges it allows)."""
    from tokenizer.train import TrainConfig, train_tokenizer

    out = tmp_path_factory.mktemp("other-tok")
    train_tokenizer(TrainConfig(corpus=[str(other_korean_corpus)], out=str(out), vocab_size=1000, show_progress=False))
    return out


@pytest.fixture(scope="session")
def sentencepiece_models(korean_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untied random Llamas around SentencePiece BPE and Unigram tokenizers (byte fallback, like Gemma's)."""
    from tokenizer.train import TrainConfig, train_tokenizer

    models = {}
    for algorithm in ("bpe", "unigram"):
        tok_dir = tmp_path_factory.mktemp(f"sp-{algorithm}-tok")
        config = TrainConfig(
            corpus=[str(korean_corpus)],
            out=str(tok_dir),
            vocab_size=1200,
            algorithm=algorithm,
            backend="sentencepiece",
            show_progress=False,
        )
        train_tokenizer(config)
        models[algorithm] = write_model(tok_dir, tmp_path_factory.mktemp(f"sp-{algorithm}-model"), tie=False)
    return models
