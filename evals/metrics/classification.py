"""Choice-task scores as lm-evaluation-harness computes them: accuracy, length-normalised accuracy, macro-F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

OUT_OF_CHOICE = -1
"""Prediction index for a generated answer that matches no choice."""


def accuracy(golds: Sequence[Any], preds: Sequence[Any]) -> float:
    """Share of predictions equal to the gold answer."""
    if not golds:
        return float("nan")
    return sum(g == p for g, p in zip(golds, preds, strict=True)) / len(golds)


def macro_f1(golds: Sequence[Any], preds: Sequence[Any]) -> float:
    """Unweighted mean of per-class F1 over every label seen in golds or predictions.

    Same definition as scikit-learn's ``f1_score(average="macro")`` (which lm-evaluation-harness calls):
    a class with no true and no predicted positives contributes F1 = 0.
    """
    if not golds:
        return float("nan")
    labels = sorted(set(golds) | set(preds), key=repr)
    scores = []
    for label in labels:
        tp = sum(g == label and p == label for g, p in zip(golds, preds, strict=True))
        fp = sum(g != label and p == label for g, p in zip(golds, preds, strict=True))
        fn = sum(g == label and p != label for g, p in zip(golds, preds, strict=True))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return sum(scores) / len(scores)


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value (the first one on ties, as numpy does)."""
    best = 0
    for i, value in enumerate(values):
        if value > values[best]:
            best = i
    return best


def choice_metrics(items: list[dict[str, Any]], names: Sequence[str]) -> dict[str, float]:
    """Scores over items holding ``gold``, ``pred`` and, in scoring mode, ``lls`` and ``choices``."""
    golds = [item["gold"] for item in items]
    preds = [item["pred"] for item in items]
    out: dict[str, float] = {}
    if "acc" in names:
        out["acc"] = accuracy(golds, preds)
    if "acc_norm" in names and all("lls" in item for item in items):
        # lm-evaluation-harness divides each choice's log-likelihood by its length in characters.
        norm = [argmax([ll / max(1, len(c)) for ll, c in zip(item["lls"], item["choices"], strict=True)])
                for item in items]
        out["acc_norm"] = accuracy(golds, norm)
    if "macro_f1" in names:
        out["macro_f1"] = macro_f1(golds, preds)
    if any(item.get("mode") == "generate" for item in items):
        out["out_of_choice_rate"] = sum(p == OUT_OF_CHOICE for p in preds) / len(preds) if preds else float("nan")
    return out
