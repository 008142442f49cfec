"""Fixtures for the training tests: a small Korean corpus, chat data and config writers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

CHAT_PAIRS = [
    ("안녕하세요", "안녕하세요! 무엇을 도와드릴까요?"),
    ("주민등록등본은 어디서 떼나요?", "가까운 주민센터나 정부24에서 발급받을 수 있습니다."),
    ("여권 발급에 며칠 걸리나요?", "보통 4~8일 정도 걸립니다."),
    ("제 번호는 010-1234-5678 입니다. 연락 주세요.", "네, 담당자가 연락드리겠습니다."),
    ("메일 hong@example.go.kr 로 보내 주세요", "알겠습니다. 메일로 안내드리겠습니다."),
    ("전입신고는 어떻게 하나요?", "이사한 날부터 14일 이내에 주민센터에서 신고하시면 됩니다."),
    ("오늘 날씨 어때요?", "저는 날씨 정보를 볼 수 없지만, 기상청 누리집을 확인해 보세요."),
    ("고맙습니다", "천만에요. 또 궁금한 점이 있으면 물어보세요."),
]


def write_chat(path: Path, pairs: list[tuple[str, str]] = CHAT_PAIRS, system: str | None = None) -> Path:
    """Write user/assistant pairs as OpenAI ``messages`` JSONL."""
    with path.open("w", encoding="utf-8") as fh:
        for q, a in pairs:
            msgs = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]
            fh.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled public-domain Korean story, one paragraph per line."""
    from nexus_k.core.korean_text import bundled_korean_text

    path = tmp_path_factory.mktemp("corpus") / "dongbaekkot.txt"
    path.write_text(bundled_korean_text(), encoding="utf-8")
    return path


@pytest.fixture
def chat_file(tmp_path: Path) -> Path:
    """Eight short Korean conversations, two with personal data."""
    return write_chat(tmp_path / "chat.jsonl")


@pytest.fixture
def pretrain_yaml(tmp_path: Path, tiny_model_dir: Path, corpus_file: Path) -> Callable[..., Path]:
    """Write a small pretraining config (override sections with keyword dicts); returns its path."""

    def make(out: Path | None = None, **sections: dict[str, Any]) -> Path:
        data: dict[str, Any] = {
            "output_dir": str(out or tmp_path / "run"),
            "tokenizer": str(tiny_model_dir),
            "model": {
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "intermediate_size": 128,
                "max_position_embeddings": 256,
            },
            "data": {"train": [str(corpus_file)], "heldout_docs": 5, "seq_len": 64},
            "optim": {"lr": 3e-3, "warmup_steps": 2},
            "train": {
                "max_steps": 8,
                "micro_batch_size": 4,
                "grad_accum_steps": 2,
                "precision": "fp32",
                "log_every": 1,
                "eval_every": 4,
                "checkpoint_every": 4,
                "threads": 1,
            },
        }
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        path = tmp_path / f"pretrain-{len(list(tmp_path.glob('pretrain-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return path

    return make
