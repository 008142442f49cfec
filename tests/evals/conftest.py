"""Fixtures for the evaluation tests: one transformers backend on the tiny model, and a live server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import start_server


@pytest.fixture(scope="session")
def hf_backend(tiny_model_dir: Path):
    """The transformers backend on the tiny model, float32 (exact enough to compare with references)."""
    from evals.backends.hf import HFBackend

    return HFBackend(str(tiny_model_dir), dtype="float32", batch_size=3)


@pytest.fixture(scope="session")
def served_tiny(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``nexus-k serve --engine hf`` on the tiny model; yields the /v1 base URL."""
    log = tmp_path_factory.mktemp("eval-server") / "server.log"
    server = start_server("hf", tiny_model_dir, log, max_model_len=1024, args=["--dtype", "float32"], timeout=300)
    try:
        yield server.api
    finally:
        server.stop(timeout=30)
