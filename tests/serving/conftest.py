"""Live servers for the API tests: ``nexus-k serve`` subprocesses on 127.0.0.1, one per engine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serving.engines import vllm_available


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    """A running server and what tests need to talk to it."""

    engine: str
    base_url: str
    model: str
    lora: str
    model_dir: Path
    process: subprocess.Popen
    log: Path

    @property
    def api(self) -> str:
        return f"{self.base_url}/v1"


def start_server(engine: str, model_dir: Path, lora_dir: Path | None, log: Path, env_extra: dict | None = None,
                 timeout: float = 600) -> LiveServer:
    """Start ``nexus-k serve`` (with the LoRA adapter as ``tiny-lora`` if given) and wait until /health
    answers (or fail with the server's log)."""
    port = free_port()
    cmd = [sys.executable, "-m", "nexus_k", "serve", "--engine", engine, "--model", str(model_dir),
           "--port", str(port), "--served-model-name", "tiny-ko", "--max-model-len", "2048"]
    if lora_dir is not None:
        cmd += ["--lora", f"tiny-lora={lora_dir}"]
    if engine == "vllm":
        cmd += ["--enforce-eager", "--kv-cache-gib", "1"]
    env = {**os.environ, "NEXUS_K_CACHE_DIR": str(log.parent / "cache"), **(env_extra or {})}
    handle = log.open("w")
    process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return LiveServer(engine, base, "tiny-ko", "tiny-lora", model_dir, process, log)
        except httpx.HTTPError:
            pass
        time.sleep(1)
    process.kill()
    raise RuntimeError(f"server did not start in {timeout}s:\n{log.read_text()[-4000:]}")


def thread_priorities(pid: int) -> frozenset[tuple[int, int]]:
    """(scheduling policy, niceness) of each live thread of ``pid``; Linux keeps both per thread."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        found.add((int(fields[38]), int(fields[16])))  # stat fields 41 (policy) and 19 (nice)
    return frozenset(found)


def stop_server(server: LiveServer) -> None:
    """SIGTERM, then SIGKILL if it lingers."""
    server.process.terminate()
    try:
        server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def lora_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter for the tiny model with random (non-zero) weights, so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("tiny-lora")
    peft_model.save_pretrained(out)
    return out


ENGINES = ["hf", "vllm"]


@pytest.fixture(scope="session", params=ENGINES)
def live_server(request: pytest.FixtureRequest, tiny_model_dir: Path, lora_dir: Path,
                tmp_path_factory: pytest.TempPathFactory):
    """A live server on each engine in turn (vLLM skipped, with the reason, where it is not installed)."""
    engine = request.param
    if engine == "vllm" and not vllm_available():
        pytest.skip("vLLM is not installed")
    log = tmp_path_factory.mktemp(f"server-{engine}") / "server.log"
    server = start_server(engine, tiny_model_dir, lora_dir, log)
    yield server
    stop_server(server)


@pytest.fixture
def client(live_server: LiveServer):
    """The official OpenAI client pointed at the live server."""
    import openai

    return openai.OpenAI(base_url=live_server.api, api_key="unused", max_retries=0, timeout=300)
