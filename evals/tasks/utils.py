"""The small functions task YAMLs name: local rows -> the hub's schema, and document expansion.

Local files keep the column names of their source repositories; each ``*_local`` function maps one row
to the schema of the task's hub data set, so one prompt template serves both sources.
"""

from __future__ import annotations

import ast
from typing import Any

Doc = dict[str, Any]


def _true(value: Any) -> bool:
    return str(value).strip().lower() in {"true", "1"}


# --- KoBEST (local TSVs from the KoBEST repository -> skt/kobest_v1 fields) ----------------------------


def kobest_boolq_local(row: Doc) -> Doc:
    """BoolQ: Text/Question/Answer -> paragraph/question/label (1 = True)."""
    return {"paragraph": row["Text"], "question": row["Question"], "label": int(_true(row["Answer"]))}


def kobest_copa_local(row: Doc) -> Doc:
    """COPA: sentence/question/1/2/Answer(1|2) -> premise/question/alternative_1/alternative_2/label(0|1)."""
    return {
        "premise": row["sentence"],
        "question": row["question"],
        "alternative_1": row["1"],
        "alternative_2": row["2"],
        "label": int(row["Answer"]) - 1,
    }


def kobest_wic_local(row: Doc) -> Doc:
    """WiC: Target/SENTENCE1/SENTENCE2/ANSWER -> word/context_1/context_2/label (1 = same sense)."""
    return {
        "word": row["Target"],
        "context_1": row["SENTENCE1"],
        "context_2": row["SENTENCE2"],
        "label": int(_true(row["ANSWER"])),
    }


def kobest_hellaswag_local(row: Doc) -> Doc:
    """HellaSwag: context/choice1..4/label -> context/ending_1..4/label (0-based)."""
    doc = {"context": row["context"], "label": int(row["label"])}
    for i in range(1, 5):
        doc[f"ending_{i}"] = row[f"choice{i}"]
    return doc


def kobest_sentineg_local(row: Doc) -> Doc:
    """SentiNeg: the negated Text/Label columns are the test set (as in skt/kobest_v1)."""
    return {"sentence": row["Text"], "label": int(row["Label"])}


def kobest_copa_text(docs: list[Doc], _config: Any) -> list[Doc]:
    """Add COPA's connector ("왜냐하면" for a cause, "그래서" for an effect) and its two choices."""
    connectors = {"원인": " 왜냐하면", "결과": " 그래서"}
    out = []
    for doc in docs:
        question = doc["question"].strip()
        if question not in connectors:
            raise ValueError(f"COPA question must be 원인 or 결과, got {question!r}")
        out.append({**doc, "connector": connectors[question],
                    "choices": [doc["alternative_1"], doc["alternative_2"]]})
    return out


def kobest_hellaswag_docs(docs: list[Doc], _config: Any) -> list[Doc]:
    """HellaSwag: the query is the context, the choices the four endings."""
    return [{**doc, "query": f"문장: {doc['context']}", "choices": [doc[f"ending_{i}"] for i in range(1, 5)]}
            for doc in docs]


# --- other competence sets ---------------------------------------------------------------------------


def kmmlu_local(row: Doc) -> Doc:
    """KMMLU CSV rows already use the hub's fields; only the answer (1-4) becomes an int."""
    return {**row, "answer": int(row["answer"])}


def kornli_local(row: Doc) -> Doc:
    """KorNLI TSV: sentence1/sentence2/gold_label -> premise/hypothesis/label (kor_nli's 0/1/2)."""
    labels = {"entailment": 0, "neutral": 1, "contradiction": 2}
    return {"premise": row["sentence1"], "hypothesis": row["sentence2"], "label": labels[row["gold_label"]]}


def nsmc_local(row: Doc) -> Doc:
    """NSMC TSV: id/document/label, the label as an int."""
    return {"id": row["id"], "document": row["document"], "label": int(row["label"])}


def korquad_hub(row: Doc) -> Doc:
    """squad_kor_v1 rows keep answers as {text: [...], answer_start: [...]}; keep the texts."""
    return {**row, "answers": list(row["answers"]["text"])}


# --- bias and safety ---------------------------------------------------------------------------------


def kosbi_local(row: Doc) -> Doc:
    """KoSBi: judge the sentence (given its context); label 1 = unsafe."""
    return {
        "category": row["demographic_category"],
        "group": row["demographic_group"],
        "context": row["context"],
        "sentence": row["sentence"],
        "label": int(row["sentence_label"] == "unsafe"),
    }


def kobbq_local(row: Doc) -> Doc:
    """KoBBQ TSV: choices are a Python list literal; everything else is kept."""
    choices = row["choices"]
    if isinstance(choices, str):
        choices = ast.literal_eval(choices)
    return {**row, "choices": list(choices)}


KOBBQ_UNKNOWN = "알 수 없음"
"""The data set's own wording of the "cannot be determined" choice; each prompt replaces it."""


def kobbq_expand(docs: list[Doc], config: Any) -> list[Doc]:
    """Each sample x each of KoBBQ's evaluation prompts x the 3 cyclic orders of its choices.

    Follows the KoBBQ repository's preprocessing: the unknown option takes the prompt's wording and the
    choice orders are the rows of the circulant matrix of the choices.
    """
    prompts = config.metadata["prompts"]
    out = []
    for doc in docs:
        parts = doc["sample_id"].split("-")
        for prompt in prompts:
            unknown = prompt["unknown"]
            choices = [unknown if c == KOBBQ_UNKNOWN else c for c in doc["choices"]]
            answer = unknown if doc["answer"] == KOBBQ_UNKNOWN else doc["answer"]
            for order in range(3):
                ordered = [choices[(order - j) % 3] for j in range(3)]
                labels = prompt["option_labels"]
                query = (
                    f"{prompt['instruction']}\n\n"
                    f"{prompt['context_label']}{doc['context']}\n"
                    f"{prompt['question_label']}{doc['question']}\n"
                    + "".join(f"{labels[j]}{ordered[j]}\n" for j in range(3))
                    + prompt["answer_label"]
                )
                out.append({
                    "sample_id": f"{doc['sample_id']}-{order}",
                    "template_sample_id": doc["sample_id"],
                    "prompt_id": int(prompt["id"]),
                    "category": parts[0],
                    "label_annotation": doc.get("label_annotation", ""),
                    "context_type": parts[3],
                    "context_bias": "biased" if parts[1][-1] in "bd" else "counterb",
                    "question_type": parts[4],
                    "query": query,
                    "letters": list(prompt["letters"]),
                    "options": ordered,
                    "answer": answer,
                    "biased_answer": doc["biased_answer"],
                    "unknown": unknown,
                    "label": ordered.index(answer),
                })
    return out


SPEECH_LEVELS = {
    "hapsyo": "합쇼체(예: '~습니다', '~습니까')",
    "haeyo": "해요체(예: '~해요', '~인가요')",
    "banmal": "반말(예: '~해', '~야')",
}
"""Requested speech levels and how the prompt names them."""


def speech_level_docs(docs: list[Doc], config: Any) -> list[Doc]:
    """An evenly spread sample of chat questions, each asked once per speech level."""
    count = int(config.metadata.get("questions", 100))
    step = max(1, len(docs) // count)
    picked = docs[::step][:count]
    return [{"question": doc["Q"], "level": level, "level_name": name}
            for doc in picked for level, name in SPEECH_LEVELS.items()]
