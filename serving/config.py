"""Server settings: from the environment (prefix ``NEXUS_K_``) and ``nexus-k serve`` options."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from nexus_k.core.settings import get_settings


def _default_database_url() -> str:
    path = get_settings().cache_dir / "nexus-k.db"
    return f"sqlite:///{path}"


class ServerSettings(BaseSettings):
    """Everything the HTTP server needs to know; each field can be set as ``NEXUS_K_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="NEXUS_K_", extra="ignore", protected_namespaces=())

    model: str | None = Field(None, description="HF folder or hub id; None serves the bundled Korean demo model.")
    engine: str = Field("vllm", description="Inference engine: 'vllm' (default) or 'hf' (transformers).")
    served_model_name: str | None = Field(None, description="Name clients use in `model`; defaults to the path.")
    host: str = Field("127.0.0.1", description="Address to bind. Loopback by default: nothing is exposed.")
    port: int = Field(8000, description="TCP port.")
    max_model_len: int | None = Field(None, description="Context length cap (prompt + completion tokens).")
    tensor_parallel_size: int = Field(1, description="vLLM tensor parallelism (GPUs per model replica).")
    pipeline_parallel_size: int = Field(1, description="vLLM pipeline parallelism (stages per replica).")
    dtype: str = Field("auto", description="Weights dtype: auto, bfloat16, float16 or float32.")
    lora: dict[str, str] = Field(default_factory=dict, description="LoRA adapters: served name -> folder.")
    max_lora_rank: int = Field(64, description="Largest LoRA rank the engine reserves room for.")
    enforce_eager: bool = Field(False, description="vLLM: skip graph compilation (faster start, slower run).")
    kv_cache_gib: float = Field(2.0, description="vLLM CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE).")
    engine_core_priority: Literal["normal", "low", "idle"] = Field(
        "low",
        description="vLLM on CPU: CPU priority of vLLM's engine-core process, which busy-waits for its workers: "
                    "normal (as vLLM starts it), low (niceness 10) or idle (SCHED_IDLE). See docs/serving.md.")
    gpu_memory_utilization: float = Field(0.9, description="vLLM GPU: share of GPU memory to use.")
    max_num_seqs: int = Field(128, description="Most sequences the engine runs at once.")
    max_n: int = Field(16, description="Largest `n` (choices per request) accepted.")
    max_request_bytes: int = Field(2_000_000, description="Largest request body accepted (413 beyond).")
    database_url: str = Field(default_factory=_default_database_url,
                              description="SQLAlchemy URL for keys, quotas and audit (SQLite or PostgreSQL).")
    audit_content: bool = Field(False, description="Store prompts/replies in the audit log (PII redacted).")
    web_ui: bool = Field(True, description="Serve the Korean chat page at `/`.")
    web_dir: Path = Field(Path(__file__).parent / "web", description="Folder of the chat page's static files.")
