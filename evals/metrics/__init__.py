"""Metric registry: a task YAML names its metrics; each name maps to a function over scored items."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evals.metrics.classification import choice_metrics
from evals.metrics.kobbq import kobbq_scores
from evals.metrics.korquad import best_over_answers, char_f1, exact_match
from evals.metrics.speech import speech_level_scores

Items = list[dict[str, Any]]


def _korquad(items: Items, names: list[str]) -> dict[str, float]:
    out = {}
    if "exact_match" in names:
        out["exact_match"] = sum(best_over_answers(exact_match, i["text"], i["answers"]) for i in items) / len(items)
    if "korquad_f1" in names:
        out["f1"] = sum(best_over_answers(char_f1, i["text"], i["answers"]) for i in items) / len(items)
    return out


METRICS: dict[str, Callable[[Items, list[str]], dict[str, float]]] = {
    "acc": choice_metrics,
    "acc_norm": choice_metrics,
    "macro_f1": choice_metrics,
    "kobbq": lambda items, _names: kobbq_scores(items),
    "exact_match": _korquad,
    "korquad_f1": _korquad,
    "speech_level": lambda items, _names: speech_level_scores(items),
}
"""Metric name -> function(items, requested names) returning {score name: value}."""


def compute_metrics(items: Items, names: list[str]) -> dict[str, float]:
    """Every requested metric over ``items`` (functions serving several names run once)."""
    if not items:
        return {}
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise KeyError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
    out: dict[str, float] = {}
    seen: set[int] = set()
    for name in names:
        func = METRICS[name]
        if id(func) in seen:
            continue
        seen.add(id(func))
        out.update(func(items, names))
    return out
