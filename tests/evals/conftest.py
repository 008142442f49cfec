"""Fixtures for the evaluation tests: one transformers backend on the tiny model, and a live server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


@pytest.fixture(scope="session")
def hf_backend(tiny_model_dir: Path):
    """The transformers backend on the tiny model, float32 (exact enough to compare with references)."""
    from evals.backends.hf import HFBackend

    return HFBackend(str(tiny_model_dir), dtype="float32", batch_size=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def served_tiny(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``nexus-k serve --engine hf`` on the tiny model; yields the /v1 base URL."""
    work = tmp_path_factory.mktemp("eval-server")
    port = _free_port()
    log = (work / "server.log").open("w")
    cmd = [sys.executable, "-m", "nexus_k", "serve", "--engine", "hf", "--model", str(tiny_model_dir),
           "--port", str(port), "--served-model-name", "tiny-ko", "--max-model-len", "1024", "--dtype", "float32"]
    env = {**os.environ, "NEXUS_K_CACHE_DIR": str(work / "cache")}
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited: {(work / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not start: {(work / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"{base}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
