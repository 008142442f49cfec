"""Turn a task's documents into prompts: Jinja templates, choices, gold answers and few-shot examples."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2

from evals.config import TaskConfig
from nexus_k.core.errors import UserError

Doc = dict[str, Any]


@dataclass
class Instance:
    """One document ready for a backend."""

    doc_id: int
    doc: Doc
    prompt: str
    """Instruction, few-shot examples and the question: everything before the answer."""
    choices: list[str] | None
    gold: int | str | None
    """Index of the right choice (choice tasks) or the reference text (generative tasks)."""


_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@lru_cache(maxsize=256)
def _template(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def render(source: str, doc: Doc) -> str:
    """Fill a Jinja template with a document's fields."""
    try:
        return _template(source).render(**doc)
    except jinja2.UndefinedError as err:
        raise UserError(f"template {source!r}: {err.message}; document fields: {sorted(doc)}") from None


def doc_choices(task: TaskConfig, doc: Doc) -> list[str] | None:
    """The answer options of a document: the literal list, or the field the task names."""
    spec = task.doc_to_choice
    if spec is None:
        return None
    if isinstance(spec, list):
        return [str(c) for c in spec]
    if spec not in doc:
        raise UserError(f"task {task.task}: doc_to_choice field {spec!r} missing; fields: {sorted(doc)}")
    return [str(c) for c in doc[spec]]


def doc_gold(task: TaskConfig, doc: Doc, choices: list[str] | None) -> int | str | None:
    """Gold answer: a choice index (from an index or the choice's text), or the reference text."""
    if task.doc_to_target is None:
        return None
    target = render(task.doc_to_target, doc).strip()
    if choices is None:
        return target
    if target.lstrip("-").isdigit():
        index = int(target)
        if not 0 <= index < len(choices):
            raise UserError(f"task {task.task}: gold index {index} outside {len(choices)} choices")
        return index
    if target in choices:
        return choices.index(target)
    raise UserError(f"task {task.task}: gold answer {target!r} is not one of the choices {choices}")


def _example(task: TaskConfig, doc: Doc) -> str:
    choices = doc_choices(task, doc)
    gold = doc_gold(task, doc, choices)
    answer = choices[gold] if choices is not None and isinstance(gold, int) else str(gold or "")
    return render(task.doc_to_text, doc) + task.target_delimiter + answer


def build_instances(task: TaskConfig, docs: list[Doc], num_fewshot: int = 0,
                    fewshot_docs: list[Doc] | None = None, seed: int = 1234) -> list[Instance]:
    """One instance per document; few-shot examples are drawn with a seeded RNG (never the doc itself)."""
    if num_fewshot and not fewshot_docs:
        raise UserError(f"task {task.task}: --num-fewshot needs few-shot examples, and it has none")
    rng = random.Random(seed)
    instances = []
    for doc_id, doc in enumerate(docs):
        parts = [task.instruction] if task.instruction else []
        if num_fewshot and fewshot_docs:
            pool = [d for d in rng.sample(fewshot_docs, min(len(fewshot_docs), num_fewshot + 1)) if d != doc]
            parts.extend(_example(task, d) for d in pool[:num_fewshot])
        parts.append(render(task.doc_to_text, doc))
        choices = doc_choices(task, doc)
        instances.append(Instance(doc_id, doc, task.fewshot_delimiter.join(parts), choices,
                                  doc_gold(task, doc, choices)))
    return instances
