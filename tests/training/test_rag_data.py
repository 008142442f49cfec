"""The grounded QA recipe: file_search's exact prompt, cited answers, negatives, no KorQuAD text."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from nexus_k.core.errors import UserError
from nexus_k.core.grounded_prompt import SOURCES_INTRO, sources_prompt
from training import demo_data, rag_data, rag_sources

KORQUAD_PARAGRAPH = "서울특별시는 대한민국의 수도이며 한강을 끼고 있는 가장 큰 도시로서 정치와 경제의 중심지이다."
_SOURCE = re.compile(r"\[(\d+)\] \(([^)\n]+)\)\n(.*?)(?=\n\n\[\d+\] \(|\n\n질문: )", re.S)


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def small_data_dir(tmp_path: Path) -> Path:
    """The shared layout with 30 BoolQ rows (one copying KorQuAD), 20 KoBBQ samples, chat pairs and KorQuAD."""
    root = tmp_path / "data"
    boolq = [[str(i), f"문서 {i}번은 고양이 {i}마리에 관한 글이다. 고양이는 {i}살이다. 끝 문장 {i}.",
              f"고양이는 {i}살이다.", "TRUE" if i % 2 else "FALSE"] for i in range(29)]
    boolq.append(["99", KORQUAD_PARAGRAPH, "서울은 수도이다.", "TRUE"])
    _write_tsv(root / rag_sources.BOOLQ_TRAIN, ["ID", "Text", "Question", "Answer"], boolq)
    kobbq = []
    for i in range(10):
        context = f"어제 {i}번 가게에서 학생과 노인을 봤습니다. 학생이 길을 잃었습니다."
        for kind in ("amb", "dis"):
            kobbq.append([f"age-{i:03d}a-001-{kind}-bsd", "ST", context if kind == "dis" else context[:20],
                          "누가 길을 잃었습니까?", "['학생', '노인', '알 수 없음']", "노인",
                          "학생" if kind == "dis" else "알 수 없음", "1.0", "Age", ""])
    _write_tsv(root / rag_sources.KOBBQ_SAMPLES, ["sample_id", "label_annotation", "context", "question", "choices",
                                                   "biased_answer", "answer", "bbq_id", "bbq_category", "prediction"],
               kobbq)
    (root / "chatbot_data").mkdir()
    with (root / demo_data.CHATBOT_CSV).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Q", "A", "label"])
        writer.writerows([f"안녕 {i}", f"반가워요 {i}", "0"] for i in range(20))
    (root / "square").mkdir()
    (root / demo_data.SQUARE_RESPONSES).write_text("[]", encoding="utf-8")
    korquad = {"data": [{"paragraphs": [{"context": KORQUAD_PARAGRAPH,
                                         "qas": [{"question": "대한민국의 수도는?", "answers": []}]}]}]}
    (root / rag_sources.KORQUAD_DEV).parent.mkdir()
    (root / rag_sources.KORQUAD_DEV).write_text(json.dumps(korquad, ensure_ascii=False), encoding="utf-8")
    return root


def _config(root: Path, **overrides) -> rag_data.RagDataConfig:
    values = {"boolq": 12, "kobbq": 6, "office": 4, "negatives": 6, "office_negatives": 2, "chat": 5,
              "heldout_percent": 20, "max_heldout": 6}
    return rag_data.RagDataConfig(data_dir=str(root), **{**values, **overrides})


def _parse(prompt: str) -> tuple[list[tuple[str, str]], str]:
    """The (filename, text) sources and the question of a grounded prompt."""
    sources = [(m.group(2), m.group(3)) for m in _SOURCE.finditer(prompt)]
    return sources, prompt.rsplit("\n\n질문: ", 1)[1]


def test_prompts_are_file_searchs_and_answers_cite_the_passage(small_data_dir: Path) -> None:
    from serving.handlers import file_search

    assert file_search.sources_prompt is sources_prompt, "the server must build its prompt with the same function"
    train, heldout, _ = rag_data.build_rag_data(_config(small_data_dir))
    grounded = [r for r in train + heldout if r["kind"] in {"boolq", "kobbq"}]
    assert {r["kind"] for r in grounded} == {"boolq", "kobbq"}
    for record in grounded:
        user, assistant = (m["content"] for m in record["messages"])
        assert user.startswith(SOURCES_INTRO + "\n\n[1] (")
        sources, question = _parse(user)
        numbers = [int(m.group(1)) for m in _SOURCE.finditer(user)]
        assert numbers == list(range(1, len(sources) + 1)) and 1 <= len(sources) <= 3, numbers
        assert len({text for _, text in sources}) == len(sources), "a passage given twice"
        assert all(name.strip() and text.strip() for name, text in sources)
        assert sources_prompt(question, sources) == user
        cited = re.findall(r"\[(\d+)\]$", assistant)
        assert cited, f"answer without a final citation: {assistant}"
        body = assistant.rsplit(" [", 1)[0]
        claim = body.split(". ", 1)[1] if record["kind"] == "boolq" else body
        assert claim in sources[int(cited[0]) - 1][1]
        if record["kind"] == "boolq":
            assert body.split(". ", 1)[0] in {"예", "아니요"} and question.endswith(" 이 말이 맞나요?")


def test_negatives_hold_no_answer_and_chat_has_no_sources(small_data_dir: Path) -> None:
    train, _, report = rag_data.build_rag_data(_config(small_data_dir))
    negatives = [r for r in train if r["kind"] == "negative"]
    assert len(negatives) == report.train["negative"] == 6 + 2
    for record in negatives:
        assert record["messages"][1]["content"] == rag_data.NO_ANSWER
        sources, question = _parse(record["messages"][0]["content"])
        assert sources and question
    office = [r for r in negatives if r["source"] == "office"]
    assert len(office) == 2 and all("제1조(" in r["messages"][0]["content"] for r in office)
    assert report.train["office"] == 4
    chat = [r for r in train if r["kind"] == "chat"]
    assert len(chat) == 5 and not any(SOURCES_INTRO in r["messages"][0]["content"] for r in chat)


def test_korquad_text_is_dropped_and_split_keeps_groups_apart(small_data_dir: Path) -> None:
    config = _config(small_data_dir, boolq=100, kobbq=100)
    train, heldout, report = rag_data.build_rag_data(config)
    assert report.dropped_korquad_overlap == {"kobest_boolq": 1, "kobbq": 0}
    assert report.read == {"kobest_boolq": 30, "kobbq": 10}, "ambiguous KoBBQ contexts are not read"
    text = json.dumps(train + heldout, ensure_ascii=False)
    assert "한강을 끼고" not in text and "서울은 수도이다" not in text

    def gold(records: list[dict]) -> set[str]:
        out = set()
        for r in records:
            if r["kind"] in {"boolq", "kobbq"}:
                sources, _ = _parse(r["messages"][0]["content"])
                out.add(sources[int(r["messages"][1]["content"].rsplit("[", 1)[1][:-1]) - 1][1])
        return out

    assert gold(heldout) and not gold(train) & gold(heldout)


def test_output_is_reproducible(small_data_dir: Path, tmp_path: Path) -> None:
    config = _config(small_data_dir)
    rag_data.write_rag_data(config, tmp_path / "a")
    rag_data.main(["--out", str(tmp_path / "b"), "--data-dir", str(small_data_dir), "--boolq", "12", "--kobbq", "6",
                   "--office", "4", "--negatives", "6", "--office-negatives", "2", "--chat", "5",
                   "--heldout-percent", "20", "--max-heldout", "6"])
    for name in ("train.jsonl", "heldout.jsonl", "recipe.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_missing_korquad_is_a_user_error_unless_decontamination_is_off(small_data_dir: Path) -> None:
    (small_data_dir / rag_sources.KORQUAD_DEV).unlink()
    with pytest.raises(UserError, match=r"KorQuAD_v1\.0_dev\.json not found"):
        rag_data.build_rag_data(_config(small_data_dir))
    train, _, report = rag_data.build_rag_data(_config(small_data_dir, decontaminate=False))
    assert train and report.dropped_korquad_overlap == {"kobest_boolq": 0, "kobbq": 0}


def test_real_shared_data_has_no_korquad_text(shared_data: Path) -> None:
    config = rag_data.RagDataConfig(data_dir=str(shared_data))
    train, heldout, report = rag_data.build_rag_data(config)
    assert report.train == {"boolq": 240, "kobbq": 200, "office": 200, "negative": 110, "chat": 600}
    assert report.heldout["negative"] > 0
    runs = rag_sources.korquad_shingles(shared_data / rag_sources.KORQUAD_DEV, config.shingle_chars)
    for record in train + heldout:
        for message in record["messages"]:
            text = message["content"].removeprefix(SOURCES_INTRO)
            assert not rag_sources.shares_run(text, runs, config.shingle_chars), text[:80]


def test_check_scores_answers_citations_and_abstentions() -> None:
    from training.rag_check import score_grounded, summarise

    def record(kind: str, answer: str) -> dict:
        turns = [{"role": "user", "content": "..."}, {"role": "assistant", "content": answer}]
        return {"kind": kind, "messages": turns}

    boolq, kobbq, negative = record("boolq", "예. 고양이는 3살이다. [2]"), record("kobbq", "학생 [1]"), record(
        "negative", rag_data.NO_ANSWER)
    assert score_grounded(boolq, "예. 고양이는 세 살이다. [2]") == {
        "kind": "boolq", "correct": True, "cited_right": True, "abstained": False}
    assert score_grounded(boolq, "아니요. 고양이는 3살이다. [1]")["correct"] is False
    assert score_grounded(kobbq, "학생입니다 [1].")["correct"] and not score_grounded(kobbq, "노인 [1]")["correct"]
    assert score_grounded(negative, rag_data.NO_ANSWER)["correct"]
    office = record("office", "숙박비는 하룻밤 12만 원 이내에서 실비로 지급합니다. [3]")
    assert score_grounded(office, "하룻밤 12만 원까지입니다 [3].") == {
        "kind": "office", "correct": True, "cited_right": True, "abstained": False}
    assert not score_grounded(office, "하룻밤 15만 원까지입니다 [3].")["correct"]
    assert not score_grounded(negative, "학생 [1]")["correct"]
    rows = [score_grounded(kobbq, "학생 [1]"), score_grounded(kobbq, "노인 [2]")]
    assert summarise(rows) == {"kobbq": {"n": 2, "correct": 50.0, "cited_right": 50.0, "abstained": 0.0}}
