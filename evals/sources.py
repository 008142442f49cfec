"""Read a task's documents: a local file under the data dir when there is one, else the hub (``datasets``)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from evals.config import SourceConfig, TaskConfig
from evals.tasks import utils as task_utils
from nexus_k.core.errors import UserError

log = logging.getLogger(__name__)

Doc = dict[str, Any]


def utils_function(name: str):
    """The function ``name`` from ``evals.tasks.utils`` (task YAMLs refer to functions by name)."""
    func = getattr(task_utils, name, None)
    if func is None or not callable(func):
        raise UserError(f"task refers to unknown function evals.tasks.utils.{name}")
    return func


def read_local_rows(path: Path, fmt: str | None = None) -> list[Doc]:
    """Rows of a TSV/CSV/JSON/JSONL file, or the flattened questions of a SQuAD-style JSON file."""
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt == "tsv":
        # Review and NLI texts hold stray quote characters: TSVs are read without quoting.
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if fmt == "csv":
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    if fmt == "json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "data" in data:
            data = data["data"]
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of records")
        return data
    if fmt == "squad":
        return _squad_rows(json.loads(path.read_text(encoding="utf-8")))
    raise UserError(f"{path}: unsupported format {fmt!r}")


def _squad_rows(data: dict[str, Any]) -> list[Doc]:
    rows = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows.append({
                    "id": qa["id"],
                    "title": article.get("title", ""),
                    "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": [a["text"] for a in qa["answers"]],
                })
    return rows


def _hub_rows(source: SourceConfig, split: str) -> list[Doc]:
    from datasets import load_dataset

    if not source.hub_path:
        raise UserError("this task has no hub data set: pass --data-dir with a local copy")
    try:
        dataset = load_dataset(source.hub_path, source.hub_name, split=split)
    except Exception as err:  # datasets raises many types (offline, missing config, network)
        raise UserError(
            f"could not load {source.hub_path} ({source.hub_name or 'default'}, {split}) from the hub: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}. "
            "Pass --data-dir (or set NEXUS_K_EVAL_DATA) with local copies, or allow the hub "
            "(NEXUS_K_ALLOW_HUB=1)."
        ) from None
    return [dict(row) for row in dataset]


def load_rows(task: TaskConfig, data_dir: Path | None, fewshot: bool = False) -> tuple[list[Doc], str]:
    """The task's rows in its own schema, and a label saying where they came from."""
    source = task.source
    local = source.local_fewshot if fewshot else source.local
    if data_dir is not None and local is not None and (data_dir / local).is_file():
        path = data_dir / local
        rows = read_local_rows(path, source.local_format if not fewshot or source.local_format else None)
        if source.local_normalize:
            normalize = utils_function(source.local_normalize)
            rows = [normalize(row) for row in rows]
        return rows, str(path)
    if data_dir is not None and local is not None:
        log.warning("%s not found under %s; trying the hub", local, data_dir)
    split = source.hub_fewshot_split if fewshot else source.hub_split
    if fewshot and split is None:
        raise UserError(f"task {task.task} has no few-shot split")
    rows = _hub_rows(source, split)
    if source.hub_normalize:
        normalize = utils_function(source.hub_normalize)
        rows = [normalize(row) for row in rows]
    return rows, f"hub:{source.hub_path}/{source.hub_name or ''}:{split}"


def load_docs(task: TaskConfig, data_dir: Path | None, limit: int | None = None,
              fewshot: bool = False) -> tuple[list[Doc], str]:
    """Rows after ``process_docs``; ``limit`` keeps the first N rows before any expansion."""
    rows, origin = load_rows(task, data_dir, fewshot=fewshot)
    if limit is not None:
        rows = rows[:limit]
    if task.process_docs:
        rows = utils_function(task.process_docs)(rows, task)
    return rows, origin
