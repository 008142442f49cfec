"""Chat data: every bad line reported at once with its number, PII redaction, assistant-only labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nexus_k.core.chat_templates import resolve_chat_template
from nexus_k.core.errors import UserError
from tests.training.conftest import CHAT_PAIRS, write_chat
from training.chat_data import (
    IGNORE_INDEX,
    ChatDataStats,
    encode_all,
    read_conversations,
    redact_conversations,
)
from training.finetune import FinetuneConfig, prepare_data

GOOD = json.dumps({"messages": [{"role": "user", "content": "안녕"}, {"role": "assistant", "content": "네"}]})


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_all_problems_are_reported_with_line_numbers(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "bad.jsonl",
        [
            GOOD,
            '{"messages": [{"role": "user", "content": "a"}',  # bad JSON
            json.dumps({"messages": [{"role": "bot", "content": "a"}]}),
            json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}]}),
            json.dumps({"messages": [{"role": "user", "content": "질문만"}]}),
            "",
            GOOD,
        ],
    )
    with pytest.raises(UserError) as err:
        read_conversations(path)
    message = str(err.value)
    assert "\n" not in message
    assert "4 problem(s), nothing was trained" in message
    assert "line 2: bad JSON" in message
    assert "line 3: message 1: unknown role 'bot'" in message
    assert "line 4: message 2 (assistant): empty turn" in message
    assert "line 5: no assistant turn" in message
    assert "line 1" not in message and "line 7" not in message


def test_over_long_conversations_are_reported(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    long_answer = "가나다라마바사 " * 200
    path = write_chat(tmp_path / "long.jsonl", [CHAT_PAIRS[0], ("길게 말해 줘", long_answer), CHAT_PAIRS[1]])
    cfg = FinetuneConfig(base=str(tiny_model_dir), data=str(path), out=str(tmp_path / "out"), max_length=128)
    expected = r"1 problem\(s\), nothing was trained: line 2: \d+ tokens, over the limit of 128"
    with pytest.raises(UserError, match=expected):
        prepare_data(cfg, AutoTokenizer.from_pretrained(tiny_model_dir))


def test_labels_cover_exactly_the_assistant_turns(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    path = write_chat(tmp_path / "c.jsonl", CHAT_PAIRS[:3], system="당신은 친절한 민원 안내원입니다.")
    stats = ChatDataStats()
    items = encode_all(tok, read_conversations(path), 512, stats, path)
    for item, (question, answer) in zip(items, CHAT_PAIRS[:3], strict=True):
        labelled = [t for t in item.labels if t != IGNORE_INDEX]
        assert tok.decode(labelled) == f"{answer}<|im_end|>\n"
        unlabelled = tok.decode([t for t, lab in zip(item.input_ids, item.labels, strict=True) if lab == IGNORE_INDEX])
        assert question in unlabelled and answer not in unlabelled
    assert stats.assistant_turns == 3
    assert stats.assistant_tokens == sum(sum(lab != IGNORE_INDEX for lab in x.labels) for x in items)


def test_redaction_changes_text_and_counts(chat_file: Path) -> None:
    conversations = read_conversations(chat_file)
    stats = ChatDataStats()
    redact_conversations(conversations, stats)
    text = json.dumps([c.messages for c in conversations], ensure_ascii=False)
    assert "010-1234-5678" not in text and "hong@example.go.kr" not in text
    assert "[PHONE]" in text and "[EMAIL]" in text
    assert stats.redactions["phone"] == 1 and stats.redactions["email"] == 1
    assert stats.conversations_redacted == 2


def test_template_falls_back_to_chatml_when_the_tokenizer_has_none() -> None:
    class NoTemplate:
        chat_template = None

    assert "<|im_start|>" in resolve_chat_template(NoTemplate())


def test_cli_rejects_bad_data_in_one_line_and_trains_nothing(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _write_lines(tmp_path / "bad.jsonl", [GOOD, "not json", json.dumps({"messages": [{"role": "robot"}]})])
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nexus_k.cli",
            "finetune",
            "--base",
            str(tiny_model_dir),
            "--data",
            str(data),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "line 2: bad JSON" in lines[0] and "line 3:" in lines[0]
    assert not out.exists()
