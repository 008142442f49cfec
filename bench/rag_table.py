"""Markdown tables of ``bench.rag``'s results for docs/vector_stores.md.

    python -m bench.rag_table [bench/results/rag.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METHODS = {"bm25_words": "BM25, word tokens", "bm25_kiwi": "BM25, Kiwi morphemes", "dense": "dense (ko-embed)",
           "hybrid": "hybrid (RRF)", "hybrid_rerank": "hybrid + rerank top 20",
           "hybrid_text_x2": "hybrid, BM25 weight 2", "hybrid_text_x4": "hybrid, BM25 weight 4"}
SETS = {"korquad": "KorQuAD 1.0 dev", "boolq": "KoBEST BoolQ test"}


def retrieval_table(part: dict) -> str:
    """One row per data set and method: recall@1/5/10 and MRR, the best of each column in bold."""
    lines = ["| set (questions x documents) | method | R@1 | R@5 | R@10 | MRR |", "|---|---|---|---|---|---|"]
    for name, found in part["sets"].items():
        metrics = found["metrics"]
        best = {m: max(v[m] for v in metrics.values()) for m in ("recall@1", "recall@5", "recall@10", "mrr")}
        label = f"{SETS.get(name, name)} ({found['queries']:,} x {found['documents']:,})"
        for method, values in metrics.items():
            cells = [f"**{values[m]:.3f}**" if values[m] == best[m] else f"{values[m]:.3f}" for m in best]
            lines.append(f"| {label} | {METHODS.get(method, method)} | " + " | ".join(cells) + " |")
            label = ""
    return "\n".join(lines)


def ingest_table(part: dict) -> str:
    """Characters/s and pages/s per format, and where the time goes."""
    lines = ["| format | pages | characters | chunks | extraction s | chunking s | Kiwi terms s | characters/s | "
             "pages/s |", "|---|---|---|---|---|---|---|---|---|"]
    for kind, row in part["formats"].items():
        if "skipped" in row:
            lines.append(f"| {kind.upper()} | not measured: {row['skipped']} |||||||| ")
            continue
        lines.append(f"| {kind.upper()} | {row['pages']:g} | {row['chars']:,} | {row['chunks']} | {row['extract_s']} | "
                     f"{row['chunk_s']} | {row['terms_s']} | {row['chars_per_s']:,} | {row['pages_per_s']} |")
    return "\n".join(lines)


def qa_table(part: dict) -> str:
    """EM, character F1 and answer-contained of each arm."""
    lines = ["| prompt | EM | F1 (characters) | answer contained | generation s |", "|---|---|---|---|---|"]
    names = {"without_context": "question alone", "with_context": f"question + top {part['sources']} hybrid passages"}
    for arm, row in part["arms"].items():
        lines.append(f"| {names.get(arm, arm)} | {row['em']:.1f} | {row['f1']:.1f} | {row['contains']:.1f} | "
                     f"{row['seconds']:g} |")
    return "\n".join(lines)


def main() -> None:
    """Print every table the results file has."""
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/rag.json")
    document = json.loads(path.read_text(encoding="utf-8"))
    for part, render in (("retrieval", retrieval_table), ("ingest", ingest_table), ("qa", qa_table)):
        if part in document:
            sys.stdout.write(render(document[part]) + "\n\n")


if __name__ == "__main__":
    main()
