"""Licence-clean Korean passages with questions and grounded answers, for ``training.rag_data``.

- KoBEST BoolQ ``train.tsv`` (CC BY-SA 4.0, skt/kobest_v1): a Wikipedia passage and a statement about it,
  TRUE or FALSE. The answer is 예/아니요 with the passage sentence closest to the statement as support.
- KoBBQ ``KoBBQ_test_samples.tsv`` (MIT, naver-ai/kobbq): the *disambiguated* contexts only, whose question has
  one person in the context as its answer (an extractive span).

KorQuAD (CC BY-ND) is never read as training data: it is only read to drop any passage that shares a run of
characters with it (``korquad_shingles``), so the data built here cannot leak the evaluation set.
"""

from __future__ import annotations

import ast
import csv
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from nexus_k.core.errors import UserError

BOOLQ_TRAIN = Path("kobest") / "BoolQ" / "train.tsv"
KOBBQ_SAMPLES = Path("kobbq") / "KoBBQ_test_samples.tsv"
KORQUAD_DEV = Path("korquad_v1") / "KorQuAD_v1.0_dev.json"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class GroundedItem:
    """A passage, a question whose answer it holds, and that answer (without the citation)."""

    source: str
    """Data set name (``kobest_boolq``, ``kobbq`` or ``office``)."""
    group: str
    """What decides the held-out split: items of one group (one passage or one KoBBQ template) stay together."""
    passage: str
    """The text the answer comes from."""
    question: str
    """The user's question."""
    answer: str
    """The grounded answer, before the ``[n]`` of the passage is appended."""
    holds_answer: bool = True
    """False for a negative whose own passage is shown but does not hold the answer (``training.rag_office``)."""


def clean(text: str) -> str:
    """NFC with whitespace collapsed (as ``training.demo_data``)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _read_tsv(path: Path, columns: set[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise UserError(f"{path} not found; point --data-dir at the shared data folder (kobest/, kobbq/)")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if rows and not columns <= set(rows[0]):
        raise UserError(f"{path} lacks the columns {sorted(columns - set(rows[0]))}")
    return rows


def _bigrams(text: str) -> set[str]:
    squeezed = text.replace(" ", "")
    return {squeezed[i:i + 2] for i in range(len(squeezed) - 1)}


def supporting_sentence(passage: str, statement: str) -> str:
    """The passage sentence sharing the most character bigrams with ``statement``."""
    sentences = [s for s in _SENTENCE_END.split(passage) if s.strip()] or [passage]
    wanted = _bigrams(statement)
    return max(sentences, key=lambda s: len(_bigrams(s) & wanted))


def read_boolq(path: Path) -> list[GroundedItem]:
    """BoolQ statements as yes/no questions answered with 예/아니요 and the supporting sentence."""
    items = []
    for row in _read_tsv(path, {"Text", "Question", "Answer"}):
        passage, statement = clean(row["Text"]), clean(row["Question"])
        if not passage or not statement or row["Answer"] not in {"TRUE", "FALSE"}:
            continue
        verdict = "예" if row["Answer"] == "TRUE" else "아니요"
        items.append(GroundedItem("kobest_boolq", f"boolq:{passage[:40]}", passage, f"{statement} 이 말이 맞나요?",
                                  f"{verdict}. {supporting_sentence(passage, statement)}"))
    return items


def read_kobbq_disambiguated(path: Path) -> list[GroundedItem]:
    """KoBBQ's disambiguated samples: the answer is the person the context names."""
    items = []
    for row in _read_tsv(path, {"sample_id", "context", "question", "choices", "answer"}):
        if "-dis-" not in row["sample_id"]:
            continue
        context, question, answer = clean(row["context"]), clean(row["question"]), clean(row["answer"])
        choices = [clean(c) for c in ast.literal_eval(row["choices"])]
        if answer not in choices or answer not in context:
            continue
        template = "-".join(row["sample_id"].split("-")[:2])
        items.append(GroundedItem("kobbq", f"kobbq:{template}", context, question, answer))
    return items


def korquad_shingles(path: Path, width: int) -> set[str]:
    """Every ``width``-character run (spaces removed) of KorQuAD dev's contexts and questions."""
    if not path.is_file():
        raise UserError(f"{path} not found; it is needed to keep KorQuAD text out (or pass --no-decontaminate)")
    runs: set[str] = set()
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            texts = [paragraph["context"]] + [qa["question"] for qa in paragraph["qas"]]
            for text in texts:
                squeezed = clean(text).replace(" ", "")
                runs.update(squeezed[i:i + width] for i in range(len(squeezed) - width + 1))
    return runs


def shares_run(text: str, runs: set[str], width: int) -> bool:
    """Whether ``text`` (spaces removed) has a ``width``-character run in ``runs``."""
    squeezed = clean(text).replace(" ", "")
    return any(squeezed[i:i + width] in runs for i in range(len(squeezed) - width + 1))
