"""Typed configuration: one ``TaskConfig`` per task YAML, one ``RunConfig`` per ``nexus-k eval run``."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nexus_k.core.errors import UserError

DATA_DIR_ENV = "NEXUS_K_EVAL_DATA"
"""Environment variable naming the folder that holds local copies of the data sets."""


class SourceConfig(BaseModel):
    """Where a task's documents come from: a local file under the data dir, else a hub data set."""

    model_config = ConfigDict(extra="forbid")

    local: str | None = None
    """Path of the evaluation file relative to the data dir (``kobest/BoolQ/test.tsv``)."""
    local_format: Literal["tsv", "csv", "json", "jsonl", "squad"] | None = None
    """File format; guessed from the suffix when absent (``squad`` is the nested KorQuAD/SQuAD JSON)."""
    local_fewshot: str | None = None
    """Local file that few-shot examples are drawn from (a train or dev split)."""
    local_normalize: str | None = None
    """Name of a function in ``evals.tasks.utils`` turning a local row into the hub's schema."""
    hub_path: str | None = None
    """Hugging Face data set name, used when no local file is found (``skt/kobest_v1``)."""
    hub_name: str | None = None
    """The hub data set's configuration name (``boolq``)."""
    hub_split: str = "test"
    """Split to evaluate on."""
    hub_fewshot_split: str | None = None
    """Split that few-shot examples come from."""
    hub_normalize: str | None = None
    """Name of a function in ``evals.tasks.utils`` turning a hub row into the task's schema."""


class GenerationConfig(BaseModel):
    """Decoding settings for generative tasks (greedy by default, so runs are repeatable)."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = 32
    """Most new tokens per answer."""
    stop: list[str] = Field(default_factory=lambda: ["\n\n"])
    """Generation is cut at the first of these strings."""
    temperature: float = 0.0
    """0 is greedy decoding."""


class TaskConfig(BaseModel):
    """One evaluation task, read from ``evals/tasks/<family>/<task>.yaml`` over ``_defaults.yaml``."""

    model_config = ConfigDict(extra="forbid")

    task: str
    """Unique task name (``kobest_boolq``)."""
    family: str
    """Family folder the task belongs to (``kobest``); ``eval run --tasks kobest`` runs the family."""
    description: str = ""
    """One line for ``eval list``."""
    version: str
    """Version of the prompt and scoring; bump it whenever either changes."""
    output_type: Literal["multiple_choice", "generate_until"]
    """``multiple_choice``: score each choice's log-likelihood; ``generate_until``: generate, then parse."""
    source: SourceConfig
    """Where the documents come from."""
    process_docs: str | None = None
    """Function in ``evals.tasks.utils`` that maps the list of documents (may expand or filter it)."""
    instruction: str = ""
    """Text put once before the few-shot examples and the question."""
    doc_to_text: str
    """Jinja template of the question."""
    doc_to_choice: list[str] | str | None = None
    """The answer options: a literal list or the name of a document field holding a list."""
    doc_to_target: str | None = None
    """Jinja template rendering the gold answer: an index into the choices, or the answer text."""
    target_delimiter: str = " "
    """Put between the question and an answer (lm-evaluation-harness's convention)."""
    fewshot_delimiter: str = "\n\n"
    """Put between few-shot examples."""
    num_fewshot: int = 0
    """Default number of few-shot examples (``--num-fewshot`` overrides it)."""
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    """Decoding settings for generative mode."""
    answer_parser: str = "choice_text"
    """How generated text is mapped to a choice: ``choice_text`` or ``kobbq`` (letters and texts)."""
    metrics: list[str]
    """Metric names from ``evals.metrics.METRICS`` (``acc``, ``macro_f1``, ``kobbq`` ...)."""
    group_by: list[str] = Field(default_factory=list)
    """Document fields to break the scores down by (category, prompt id ...)."""
    apply_chat_template: bool = False
    """Wrap the prompt in the model's chat template (instruction-style generative tasks)."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Free-form facts about the task (licence, reference)."""

    @field_validator("group_by", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> list[str]:
        if value is None:
            return []
        return [value] if isinstance(value, str) else list(value)

    @field_validator("num_fewshot")
    @classmethod
    def _non_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("num_fewshot must be >= 0")
        return value


@dataclass
class RunConfig:
    """Everything ``nexus-k eval run`` needs; saved inside ``results.json``."""

    model: str
    """Local model folder, hub name, or the model name an endpoint serves."""
    tasks: list[str]
    """Task or family names (``kobest``, ``kobbq_generate``)."""
    out_dir: Path
    """Folder for results.json, samples and report.html."""
    backend: str = "auto"
    """``auto``, ``hf`` (transformers), ``vllm`` (in-process engine) or ``openai`` (an endpoint)."""
    base_url: str | None = None
    """OpenAI-compatible endpoint (``http://localhost:8000/v1``); implies the ``openai`` backend."""
    api_key: str | None = None
    """Key for the endpoint (falls back to OPENAI_API_KEY)."""
    api: Literal["completions", "chat"] = "completions"
    """Endpoint route: completions (log-likelihoods, generation) or chat (generation only)."""
    limit: int | None = None
    """Evaluate only the first N documents of each task."""
    num_fewshot: int | None = None
    """Few-shot examples per prompt; None keeps each task's default."""
    data_dir: Path | None = None
    """Folder with local copies of the data sets (the layout of ``shared/data``); else the hub."""
    batch_size: int = 16
    """Contexts per forward pass (local backends) or requests in flight (endpoints)."""
    dtype: str = "auto"
    """Weights dtype for local models: auto, float32, bfloat16, float16."""
    device: str = "cpu"
    """Torch device for the transformers backend."""
    adapter: str | None = None
    """A PEFT LoRA adapter folder merged into the model (transformers backend); for an endpoint, ask for the
    adapter by its served name with ``model`` instead."""
    seed: int = 1234
    """Seed for few-shot sampling."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend-specific options passed through unchanged."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.data_dir is None and os.environ.get(DATA_DIR_ENV):
            self.data_dir = Path(os.environ[DATA_DIR_ENV])
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir)
            if not self.data_dir.is_dir():
                raise UserError(f"data dir {self.data_dir} does not exist")
        if self.limit is not None and self.limit < 1:
            raise UserError("--limit must be at least 1")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise UserError("--num-fewshot must be >= 0")
        if self.batch_size < 1:
            raise UserError("--batch-size must be at least 1")
        if not self.tasks:
            raise UserError("no tasks given (see `nexus-k eval list`)")
        if self.base_url and self.backend == "auto":
            self.backend = "openai"
        if self.adapter is not None:
            if self.backend == "auto":
                self.backend = "hf"
            if self.backend != "hf":
                raise UserError(
                    f"--adapter works with the hf backend, not {self.backend!r}; a server serves its adapters "
                    "under their own model names (`--model <adapter name>`)"
                )
            if not (Path(self.adapter) / "adapter_config.json").is_file():
                raise UserError(f"--adapter {self.adapter}: no adapter_config.json in that folder")

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> RunConfig:
        """Fields from a YAML file (``configs/eval/*.yaml``), with ``overrides`` that are not None on top."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as err:
            raise UserError(f"cannot read config {path}: {err.strerror}") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: a run config must be a YAML mapping")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        missing = [name for name in ("model", "tasks", "out_dir") if name not in data]
        if missing:
            raise UserError(f"missing {', '.join(missing)} (give them on the command line or in {path})")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready copy, with the API key left out."""
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["data_dir"] = str(self.data_dir) if self.data_dir else None
        data["api_key"] = "***" if self.api_key else None
        return data
