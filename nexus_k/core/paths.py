"""Cache directories under the shared settings' ``cache_dir``."""

from __future__ import annotations

from pathlib import Path

from nexus_k.core.settings import get_settings


def cache_dir(*parts: str) -> Path:
    """A sub-directory of the Nexus-K cache, created on first use."""
    path = get_settings().cache_dir.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
