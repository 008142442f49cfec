"""Run tasks on a backend: build prompts, ask the backend, score, write results.json and samples."""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evals.backends import load_backend
from evals.backends.base import LM, GenerationRequest, LoglikelihoodRequest
from evals.config import RunConfig, TaskConfig
from evals.metrics import compute_metrics
from evals.metrics.classification import argmax
from evals.parsing import PARSERS
from evals.prompting import Instance, build_instances
from evals.registry import resolve_tasks
from evals.sources import load_docs

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
"""Name of the run summary inside the output folder."""


def task_mode(task: TaskConfig, backend: LM) -> str:
    """``loglikelihood`` for choice tasks on backends that score text, else ``generate``."""
    if task.output_type == "multiple_choice" and backend.supports_loglikelihood:
        return "loglikelihood"
    return "generate"


def _generation_request(task: TaskConfig, instance: Instance) -> GenerationRequest:
    gen = task.generation
    return GenerationRequest(instance.prompt, gen.max_tokens, tuple(gen.stop), gen.temperature,
                             chat=task.apply_chat_template)


def score_instances(task: TaskConfig, instances: list[Instance], backend: LM) -> tuple[list[dict], str, int]:
    """Per-item records (document fields plus gold, pred, lls or text), the mode, and the request count."""
    mode = task_mode(task, backend)
    items: list[dict[str, Any]] = []
    if mode == "loglikelihood":
        requests = [LoglikelihoodRequest(inst.prompt, task.target_delimiter + choice)
                    for inst in instances for choice in inst.choices or []]
        results = backend.loglikelihood(requests)
        offset = 0
        for inst in instances:
            n = len(inst.choices or [])
            lls = [r.logprob for r in results[offset:offset + n]]
            offset += n
            items.append({**inst.doc, "doc_id": inst.doc_id, "choices": inst.choices, "gold": inst.gold,
                          "lls": lls, "pred": argmax(lls), "mode": mode})
        return items, mode, len(requests)
    texts = backend.generate_until([_generation_request(task, inst) for inst in instances])
    parser = PARSERS[task.answer_parser]
    for inst, text in zip(instances, texts, strict=True):
        item = {**inst.doc, "doc_id": inst.doc_id, "gold": inst.gold, "text": text, "mode": mode}
        if inst.choices is not None:
            item.update(choices=inst.choices, pred=parser(text, inst.choices, inst.doc))
        items.append(item)
    return items, mode, len(instances)


def _clean(value: Any) -> Any:
    """NaN -> None, recursively, so results.json is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def breakdown(items: list[dict[str, Any]], fields: list[str], metrics: list[str]) -> dict[str, Any]:
    """Scores per value of each ``group_by`` field, with item counts."""
    out: dict[str, Any] = {}
    for field in fields:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for item in items:
            groups[str(item.get(field))].append(item)
        out[field] = {key: {**compute_metrics(group, metrics), "n": len(group)}
                      for key, group in sorted(groups.items())}
    return out


def evaluate_task(task: TaskConfig, backend: LM, config: RunConfig) -> tuple[dict[str, Any], list[dict]]:
    """One task's summary for results.json and its per-item records."""
    start = time.perf_counter()
    docs, origin = load_docs(task, config.data_dir, config.limit)
    shots = task.num_fewshot if config.num_fewshot is None else config.num_fewshot
    fewshot_docs = load_docs(task, config.data_dir, fewshot=True)[0] if shots else None
    instances = build_instances(task, docs, shots, fewshot_docs, config.seed)
    load_s = time.perf_counter() - start
    log.info("%s: %d documents from %s", task.task, len(instances), origin)
    items, mode, n_requests = score_instances(task, instances, backend)
    model_s = time.perf_counter() - start - load_s
    summary = {
        "family": task.family,
        "version": task.version,
        "description": task.description,
        "mode": mode,
        "source": origin,
        "num_fewshot": shots,
        "n_docs": len(instances),
        "n_requests": n_requests,
        "metrics": compute_metrics(items, task.metrics),
        "breakdown": breakdown(items, task.group_by, task.metrics),
        "seconds": {"load": round(load_s, 3), "model": round(model_s, 3),
                    "total": round(time.perf_counter() - start, 3)},
        "task_config": task.model_dump(mode="json", exclude={"metadata"}),
    }
    return _clean(summary), [dict(item, prompt=inst.prompt) for item, inst in zip(items, instances, strict=True)]


def write_samples(path: Path, items: list[dict[str, Any]]) -> None:
    """Per-item records as JSON lines."""
    with path.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(_clean(item), ensure_ascii=False, default=str) + "\n")


def run_evaluation(config: RunConfig, backend: LM | None = None) -> dict[str, Any]:
    """Evaluate every task of ``config``; writes results.json and samples_<task>.jsonl in ``out_dir``."""
    from nexus_k import __version__

    tasks = resolve_tasks(config.tasks)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    own_backend = backend is None
    backend = backend or load_backend(config)
    load_s = time.perf_counter() - started
    results: dict[str, Any] = {
        "nexus_k_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": backend.describe(),
        "config": config.to_json(),
        "tasks": {},
        "seconds": {"backend_load": round(load_s, 3)},
    }
    try:
        for task in tasks:
            summary, items = evaluate_task(task, backend, config)
            results["tasks"][task.task] = summary
            write_samples(config.out_dir / f"samples_{task.task}.jsonl", items)
            log.info("%s: %s", task.task, summary["metrics"])
    finally:
        if own_backend:
            backend.close()
    results["seconds"]["total"] = round(time.perf_counter() - started, 3)
    (config.out_dir / RESULTS_FILE).write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
    return results
