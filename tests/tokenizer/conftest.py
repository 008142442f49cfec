"""Small Korean corpora and a trained tokenizer shared by the tokenizer tests (built locally, no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus_k.tiny_model import bundled_korean_text

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
