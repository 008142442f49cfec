"""What an engine needs to start: one typed model, shared by both engines and filled by the server's settings.

Each field says which engines honour it (``engines`` in its schema extra; none means both). Setting a field
that the chosen engine cannot honour is an error, never a silent drop. vLLM's own engine arguments are not
re-declared here: ``engine_args`` passes them through by their vLLM names, and the vLLM engine checks them
against ``AsyncEngineArgs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

VLLM_ONLY = {"engines": ["vllm"]}
HF_ONLY = {"engines": ["hf"]}


class EngineSettings(BaseModel):
    """Settings of one inference engine (a chat model, or later an embedding model)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    engine: Literal["vllm", "hf"] = Field("vllm", description="Inference engine: vllm (default) or hf (transformers).")
    model: str | None = Field(None, description="HF folder or hub id; none serves the bundled Korean demo model.")
    runner: Literal["generate", "pool", "score"] = Field(
        "generate", description="generate (a chat/completion model), pool (an embedding model, served alone) or "
                                "score (a cross-encoder reranker, served alone).")
    max_model_len: int | None = Field(None, ge=1, description="Context length cap (prompt + completion tokens).")
    dtype: str = Field("auto", description="Weights dtype: auto, bfloat16, float16 or float32.")
    lora: dict[str, str] = Field(default_factory=dict, description="LoRA adapters: served name -> folder.")
    max_num_seqs: int = Field(128, ge=1, description="Most sequences the engine runs at once.")
    chat_template: str | None = Field(
        None, description="A chat template (Jinja) file, or the template itself, replacing the tokenizer's own.")
    trust_remote_code: bool = Field(False, description="Run the model repository's own Python code (trust it first).")
    reasoning_parser: str | None = Field(
        None, description="vLLM's reasoning parser by name (deepseek_r1, qwen3, ...): thinking goes to "
                          "reasoning_content. Needs vLLM installed, for either engine.")
    max_lora_rank: int = Field(64, ge=1, description="Largest LoRA rank the engine reserves room for.",
                               json_schema_extra=VLLM_ONLY)
    kv_cache_gib: float = Field(2.0, gt=0, description="vLLM on CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE).",
                                json_schema_extra=VLLM_ONLY)
    cpu_reserved_cores: int | None = Field(
        None, ge=0, json_schema_extra=VLLM_ONLY,
        description="vLLM on CPU: cores kept free of the model's compute threads, for the API server and the engine "
                    "core (VLLM_CPU_NUM_OF_RESERVED_CPU). Default: none on a machine with at most 2 cores (there the "
                    "one vLLM reserves is half the compute; docs/serving.md), else vLLM's own (one per worker).")
    engine_core_priority: Literal["normal", "low", "idle"] = Field(
        "low", json_schema_extra=VLLM_ONLY,
        description="vLLM on CPU: CPU priority of vLLM's busy-waiting engine core: normal (as vLLM starts it), "
                    "low (niceness 10) or idle (SCHED_IDLE). See docs/serving.md.")
    engine_args: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra=VLLM_ONLY,
        description="vLLM engine arguments by their vLLM names (quantization, kv_cache_dtype, "
                    "tensor_parallel_size, ...), checked against vLLM's AsyncEngineArgs.")
    device: str | None = Field(None, description="transformers: torch device (default: cuda when present, else cpu).",
                               json_schema_extra=HF_ONLY)

    @model_validator(mode="after")
    def _honoured_by_engine(self) -> EngineSettings:
        for name in sorted(self.model_fields_set):
            engines = engines_of(name)
            if engines and self.engine not in engines and getattr(self, name) != type(self).model_fields[name].default:
                raise ValueError(f"{cli_flag(name)} is a {'/'.join(engines)} option: the {self.engine} engine "
                                 "cannot honour it")
        return self

    def chat_template_text(self) -> str | None:
        """The chat template: the file's text when ``chat_template`` names a file, else the string itself."""
        if self.chat_template is None:
            return None
        path = Path(self.chat_template).expanduser()
        if "{" not in self.chat_template and path.is_file():
            return path.read_text(encoding="utf-8")
        if "{" not in self.chat_template:
            raise ValueError(f"chat_template: {self.chat_template} is neither a file nor a Jinja template")
        return self.chat_template


def engines_of(name: str) -> list[str]:
    """The engines that honour setting ``name`` (empty: every engine)."""
    field = EngineSettings.model_fields.get(name)
    extra = field.json_schema_extra if field is not None and isinstance(field.json_schema_extra, dict) else {}
    return list(extra.get("engines", []))


def cli_flag(name: str) -> str:
    """The command-line flag of setting ``name``."""
    return {"engine_args": "--engine-arg"}.get(name, "--" + name.replace("_", "-"))


def as_settings(settings: EngineSettings | str, engine: str, overrides: dict[str, Any]) -> EngineSettings:
    """``settings`` for ``engine``; a bare model path plus keyword fields is a shorthand (tests, scripts)."""
    from pydantic import ValidationError

    from serving.engines.base import EngineError

    try:
        if isinstance(settings, str):
            return EngineSettings(engine=engine, model=settings, **overrides)
        settings = EngineSettings(**{**settings.model_dump(exclude_unset=True), **overrides, "engine": engine})
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", err)).removeprefix("Value error, ")
        raise EngineError(f"{field}: {message}" if field else message) from None
    if settings.model is None:
        raise EngineError("no model given")
    return settings
