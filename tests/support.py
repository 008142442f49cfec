"""Helpers shared by every test folder: free ports and live ``nexus-k serve`` servers on the tiny model.

Starting and waiting is the product's own :mod:`serving.launcher` (benchmarks use it too); this module only
adds the names and flags the tests agree on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from serving.launcher import ServerProcess, free_port, start_serve, wait_healthy

__all__ = ["LORA_NAME", "MODEL_NAME", "VLLM_TEST_ARGS", "LiveServer", "free_port", "start_server", "wait_healthy"]

MODEL_NAME = "tiny-ko"
"""The name the tiny model is served under."""
LORA_NAME = "tiny-lora"
"""The name the test LoRA adapter is served under."""
VLLM_TEST_ARGS = ("--enforce-eager", "--kv-cache-gib", "1")
"""vLLM on a busy CPU test machine: no graph compilation, a small KV cache."""


@dataclass
class LiveServer(ServerProcess):
    """A running ``nexus-k serve`` and what tests need to talk to it."""

    engine: str = "hf"
    model: str = MODEL_NAME
    lora: str = LORA_NAME
    model_dir: Path | None = None


def start_server(engine: str, model_dir: Path | None, log: Path, *, lora_dir: Path | None = None,
                 max_model_len: int = 2048, args: Sequence[str] = (), env: dict[str, str] | None = None,
                 timeout: float = 600) -> LiveServer:
    """``nexus-k serve`` on ``model_dir`` as ``tiny-ko`` (the bundled demo model when None), with the LoRA
    adapter as ``tiny-lora`` if given and its cache beside ``log``; returns once /health answers."""
    cmd = ["--engine", engine, "--max-model-len", str(max_model_len)]
    if model_dir is not None:
        cmd += ["--model", str(model_dir), "--served-model-name", MODEL_NAME]
    if lora_dir is not None:
        cmd += ["--lora", f"{LORA_NAME}={lora_dir}"]
    env = {"NEXUS_K_CACHE_DIR": str(log.parent / "cache"), **(env or {})}
    server = start_serve([*cmd, *args], log, env, timeout)
    return LiveServer(server.base_url, server.process, server.log, engine, model_dir=model_dir)
