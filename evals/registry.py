"""Find task YAMLs under ``evals/tasks/<family>/``, merge them over ``_defaults.yaml``, validate them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from evals.config import TaskConfig
from nexus_k.core.errors import UserError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
"""Where the shipped task YAMLs live."""


def _read_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a task file must be a YAML mapping")
    return data


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested mappings merge key by key; everything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_task_file(path: Path, defaults: dict[str, Any] | None = None) -> TaskConfig:
    """One task: its YAML (and the YAML it ``include``s, relative to it) over the shared defaults."""
    data = _read_yaml(path)
    include = data.pop("include", None)
    if include:
        base = _read_yaml(path.parent / include)
        base.pop("task", None)
        data = _merge(base, data)
    if defaults is None:
        defaults = _read_yaml(TASKS_DIR / "_defaults.yaml")
    data = _merge(defaults, data)
    data.setdefault("family", path.parent.name)
    try:
        return TaskConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{path}: {where}: {first['msg']}") from None


@lru_cache
def all_tasks() -> dict[str, TaskConfig]:
    """Every shipped task by name (files starting with ``_`` are shared pieces, not tasks)."""
    defaults = _read_yaml(TASKS_DIR / "_defaults.yaml")
    tasks: dict[str, TaskConfig] = {}
    for path in sorted(TASKS_DIR.glob("*/*.yaml")):
        if path.name.startswith("_"):
            continue
        task = load_task_file(path, defaults)
        if task.task in tasks:
            raise UserError(f"duplicate task name {task.task} ({path})")
        tasks[task.task] = task
    return tasks


def resolve_tasks(names: list[str]) -> list[TaskConfig]:
    """Task and family names (or paths to task YAMLs) -> task configs, in order, without repeats."""
    tasks = all_tasks()
    families: dict[str, list[str]] = {}
    for name, task in tasks.items():
        families.setdefault(task.family, []).append(name)
    picked: list[TaskConfig] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name.endswith((".yaml", ".yml")) and Path(name).is_file():
            found = [load_task_file(Path(name))]
        elif name in tasks:
            found = [tasks[name]]
        elif name in families:
            found = [tasks[n] for n in families[name] if tasks[n].metadata.get("in_family", True)]
        else:
            known = ", ".join(sorted(set(tasks) | set(families)))
            raise UserError(f"unknown task {name!r}; known tasks and families: {known}")
        picked.extend(t for t in found if t.task not in {p.task for p in picked})
    if not picked:
        raise UserError("no tasks given (see `nexus-k eval list`)")
    return picked
