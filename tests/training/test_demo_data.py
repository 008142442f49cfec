"""The demo chat data recipe: messages JSONL, a held-out split by answer, reproducible output."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from nexus_k.core.errors import UserError
from training import demo_data


@pytest.fixture
def small_data_dir(tmp_path: Path) -> Path:
    """A data folder in the shared layout: 40 chatbot pairs (20 distinct answers) and 3 SQuARe responses."""
    root = tmp_path / "data"
    (root / "chatbot_data").mkdir(parents=True)
    (root / "square").mkdir()
    with (root / demo_data.CHATBOT_CSV).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Q", "A", "label"])
        for i in range(40):
            writer.writerow([f"질문 {i}  입니다", f"대답 {i % 20}", str(i % 3)])
        writer.writerow(["아주 긴 질문 " * 20, "짧은 답", "0"])
    square = [
        {"question": "민감한 질문 1", "response": "신중한 대답", "acceptable?": 1, "question_category": "ethical"},
        {"question": "민감한 질문 2", "response": "나쁜 대답", "acceptable?": 0, "question_category": "ethical"},
        {"question": "민감한 질문 3", "response": "다른 신중한 대답", "acceptable?": 1, "question_category": "x"},
    ]
    (root / demo_data.SQUARE_RESPONSES).write_text(json.dumps(square, ensure_ascii=False), encoding="utf-8")
    return root


def _answers(records: list[dict]) -> set[str]:
    return {r["messages"][1]["content"] for r in records}


def test_split_keeps_each_answer_on_one_side(small_data_dir: Path) -> None:
    config = demo_data.DemoDataConfig(
        data_dir=str(small_data_dir), heldout_percent=30, max_train=None, max_heldout=None
    )
    train, heldout, report = demo_data.build_demo_data(config)
    assert heldout and train
    assert not _answers(train) & _answers(heldout)
    assert report.by_source["chatbot_data"] == {
        "read": 41,
        "dropped": 1,
        "train": report.by_source["chatbot_data"]["train"],
        "heldout": report.by_source["chatbot_data"]["heldout"],
    }
    assert report.by_source["chatbot_data"]["train"] + report.by_source["chatbot_data"]["heldout"] == 40
    assert report.by_source["square"]["read"] == 2, "only acceptable SQuARe responses are used"
    assert "나쁜 대답" not in _answers(train) | _answers(heldout)
    first = train[0]
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    assert "  " not in first["messages"][0]["content"]


def test_output_is_reproducible_and_subsampled(small_data_dir: Path, tmp_path: Path) -> None:
    config = demo_data.DemoDataConfig(data_dir=str(small_data_dir), max_train=10, max_heldout=2)
    report = demo_data.write_demo_data(config, tmp_path / "a")
    demo_data.write_demo_data(config, tmp_path / "b")
    for name in ("train.jsonl", "heldout.jsonl", "recipe.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    lines = (tmp_path / "a" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == report.train == 10
    recipe = json.loads((tmp_path / "a" / "recipe.json").read_text(encoding="utf-8"))
    assert recipe["config"]["max_train"] == 10
    assert set(recipe["report"]["source_sha256"]) == {"chatbot_data/ChatbotData.csv", "square/response_test_ood.json"}


def test_missing_source_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"ChatbotData\.csv not found"):
        demo_data.build_demo_data(demo_data.DemoDataConfig(data_dir=str(tmp_path)))


def test_command_line_writes_the_files(small_data_dir: Path, tmp_path: Path) -> None:
    demo_data.main(["--out", str(tmp_path / "out"), "--data-dir", str(small_data_dir), "--no-square"])
    records = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text("utf-8").splitlines()]
    assert records and {r["source"] for r in records} == {"chatbot_data"}


def test_real_shared_data_split(shared_data: Path) -> None:
    config = demo_data.DemoDataConfig(data_dir=str(shared_data), max_train=None, max_heldout=None)
    train, heldout, report = demo_data.build_demo_data(config)
    assert report.by_source["chatbot_data"]["read"] == 11823
    assert not _answers(train) & _answers(heldout)
    assert 0.03 < len(heldout) / (len(train) + len(heldout)) < 0.08
