"""Shared fixtures: a tiny Korean model built locally (no downloads) and the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Before any test module imports transformers: huggingface_hub reads these once, at import time.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_var, "1")


def shared_data_dir() -> Path:
    """Where the real Korean data sets live (``../shared/data`` beside the checkout by default)."""
    return Path(os.environ.get("NEXUS_K_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; tests that need it are skipped (with the reason) when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set NEXUS_K_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Llama model with a Korean BPE tokenizer and a ChatML chat template."""
    from training.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), preset="tiny")


@pytest.fixture(autouse=True, scope="session")
def _offline_env() -> None:
    """Tests never reach a model hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
