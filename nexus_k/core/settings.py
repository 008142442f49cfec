"""Settings shared by every area, read from the environment (prefix ``NEXUS_K_``)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SharedSettings(BaseSettings):
    """Process-wide settings; every field can be set as ``NEXUS_K_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="NEXUS_K_", extra="ignore")

    cache_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nexus-k",
        description="Where converted models, compile caches and other derived artifacts are kept.",
    )
    allow_hub: bool = Field(
        default=False,
        description="Allow downloads from the Hugging Face hub. Off by default: nothing leaves the machine.",
    )
    log_level: str = Field(default="INFO", description="Python logging level for the CLI and server.")


@lru_cache
def get_settings() -> SharedSettings:
    """The process's shared settings (read once)."""
    return SharedSettings()


def apply_offline_policy(settings: SharedSettings | None = None) -> None:
    """Turn hub and telemetry access off unless the operator allowed the hub explicitly."""
    settings = settings or get_settings()
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    if not settings.allow_hub:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
