"""Live servers for the API tests: ``nexus-k serve`` subprocesses on 127.0.0.1, one per engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus_k.core.settings import get_settings
from serving.engines import vllm_available
from tests.support import VLLM_TEST_ARGS, LiveServer, start_server


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
    args = VLLM_TEST_ARGS if engine == "vllm" else ()
    server = start_server(engine, tiny_model_dir, log, lora_dir=lora_dir, args=args)
    yield server
    server.stop()


@pytest.fixture
def client(live_server: LiveServer):
    """The official OpenAI client pointed at the live server."""
    import openai

    return openai.OpenAI(base_url=live_server.api, api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    """The tiny model's tokenizer (with its chat template), for the scripted engine."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def inprocess(tiny_tokenizer, tmp_path: Path):
    """The real app on a scripted engine, in-process."""
    from tests.serving.inprocess import make_inprocess

    server = make_inprocess(tiny_tokenizer, tmp_path)
    with server.http:
        yield server


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private NEXUS_K_CACHE_DIR for the test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("NEXUS_K_CACHE_DIR", str(root))
    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()
