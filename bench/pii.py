"""Korean PII detection: precision and recall per kind on the labelled test set (tests/data/pii_ko.jsonl: realistic
sentences, several kinds per message, and hard negatives such as dates, order, invoice and case numbers, business
ids and phone-like ids), plus the cost per message and of the streaming redactor.

    python -m bench.pii            # writes bench/results/pii.json

A found span counts as right when its kind and its text equal a labelled item of the sentence; every other found
span is a false positive (of its kind), every labelled item not found a false negative.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from pathlib import Path

from nexus_k.core.pii import PII_KINDS, StreamRedactor, find_pii

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO / "tests" / "data" / "pii_ko.jsonl"
TARGET = 0.95


def load(path: Path = DATASET) -> list[dict]:
    """The labelled sentences."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate(rows: list[dict]) -> dict:
    """Precision, recall and counts per kind, and the mistakes (for reading, at most 20 per kind)."""
    tp, fp, fn = Counter(), Counter(), Counter()
    mistakes: dict[str, list[str]] = {kind: [] for kind in PII_KINDS}
    for row in rows:
        text = row["text"]
        expected = Counter((item["kind"], item["value"]) for item in row["pii"])
        found = Counter((span.kind, text[span.start : span.end]) for span in find_pii(text))
        for (kind, value), n in found.items():
            right = min(n, expected[(kind, value)])
            tp[kind] += right
            if n > right:
                fp[kind] += n - right
                if len(mistakes[kind]) < 20:
                    mistakes[kind].append(f"false positive {value!r} in {text!r}")
        for (kind, value), n in expected.items():
            missed = n - min(n, found[(kind, value)])
            if missed:
                fn[kind] += missed
                if len(mistakes[kind]) < 20:
                    mistakes[kind].append(f"missed {value!r} in {text!r}")
    per_kind = {}
    for kind in PII_KINDS:
        precision = tp[kind] / (tp[kind] + fp[kind]) if tp[kind] + fp[kind] else 1.0
        recall = tp[kind] / (tp[kind] + fn[kind]) if tp[kind] + fn[kind] else 1.0
        per_kind[kind] = {"precision": round(precision, 4), "recall": round(recall, 4), "true_positives": tp[kind],
                          "false_positives": fp[kind], "false_negatives": fn[kind],
                          "meets_target": precision >= TARGET and recall >= TARGET}
    return {"per_kind": per_kind, "mistakes": {k: v for k, v in mistakes.items() if v}}


def timing(rows: list[dict], repeats: int = 5) -> dict:
    """Microseconds per message: finding spans, and redacting it as a stream of 3-character pieces."""
    texts = [row["text"] for row in rows]
    start = time.perf_counter()
    for _ in range(repeats):
        for text in texts:
            find_pii(text)
    find_us = (time.perf_counter() - start) / (repeats * len(texts)) * 1e6
    start = time.perf_counter()
    for text in texts:
        stream = StreamRedactor()
        for i in range(0, len(text), 3):
            stream.feed(text[i : i + 3])
        stream.flush()
    stream_us = (time.perf_counter() - start) / len(texts) * 1e6
    chars = sum(len(t) for t in texts) / len(texts)
    return {"find_us_per_message": round(find_us, 1), "stream_us_per_message": round(stream_us, 1),
            "mean_message_chars": round(chars, 1)}


def main() -> None:
    """Run the evaluation and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pii.json")
    args = parser.parse_args()
    rows = load()
    result = {
        "dataset": str(DATASET.relative_to(REPO)),
        "sentences": len(rows),
        "negative_sentences": sum(row["group"] == "negative" for row in rows),
        "labelled_items": sum(len(row["pii"]) for row in rows),
        "target": TARGET,
        **evaluate(rows),
        "labelled_only": evaluate([row for row in rows if row["group"] != "unlabelled"])["per_kind"],
        "unlabelled_only": evaluate([row for row in rows if row["group"] == "unlabelled"])["per_kind"],
        "timing": timing(rows),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    for kind, score in result["per_kind"].items():
        print(f"{kind:15s} precision {score['precision']:.3f}  recall {score['recall']:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
