"""End to end on the real packaged GGUF: convert it, then chat in Korean through the Gemma template."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path

import pytest

from nexus_k.core.settings import get_settings
from serving import demo_model

HANGUL = re.compile(r"[가-힣]")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec(demo_model.GGUF_PACKAGE) is None, reason="demo extra not installed"
    ),
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real GGUF converted into a private cache (the first-run path a user goes through)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NEXUS_K_CACHE_DIR", str(tmp_path_factory.mktemp("demo-cache")))
    get_settings.cache_clear()
    try:
        yield demo_model.prepare_demo_model(progress=False)
    finally:
        mp.undo()
        get_settings.cache_clear()


def _korean_reply(model, tokenizer, prompt: str) -> tuple[list[int], str]:
    import torch

    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=16, do_sample=False)
    prompt_ids = batch["input_ids"][0].tolist()
    return prompt_ids, tokenizer.decode(out[0, len(prompt_ids) :], skip_special_tokens=True)


def test_converted_folder_is_complete_and_reused(converted: Path) -> None:
    record = json.loads((converted / demo_model.MARKER_FILE).read_text())
    assert record["source_sha256"] == demo_model.PINNED_GGUF_SHA256
    generation = json.loads((converted / "generation_config.json").read_text())
    assert set(generation["eos_token_id"]) == {1, 106}  # <eos>, <end_of_turn>
    assert (converted / "GEMMA_TERMS.html").is_file()
    assert "quantization_config" not in json.loads((converted / "config.json").read_text())
    started = time.perf_counter()
    assert demo_model.prepare_demo_model(progress=False) == converted
    assert time.perf_counter() - started < 5, "a finished conversion must be reused, not redone"


def test_converted_model_chats_in_korean(converted: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert tokenizer("안녕").input_ids[0] == tokenizer.bos_token_id
    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.bfloat16).eval()
    prompt_ids, text = _korean_reply(model, tokenizer, "안녕하세요! 자기소개를 해 주세요.")
    assert prompt_ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(prompt_ids[-3:]) == "<start_of_turn>model\n"
    assert len(HANGUL.findall(text)) >= 3, text

    adapter = demo_model.demo_adapter_dir()
    if adapter is not None:
        from peft import PeftModel

        tuned = PeftModel.from_pretrained(model, adapter).eval()
        _, tuned_text = _korean_reply(tuned, tokenizer, "오늘 너무 피곤해요.")
        assert len(HANGUL.findall(tuned_text)) >= 3, tuned_text


def test_serve_without_a_model_chats_in_korean_with_the_adapter(converted: Path, tmp_path: Path) -> None:
    """What `make serve` runs: no --model, the demo base plus the committed adapter, on vLLM's engine."""

    import openai

    from serving.demo_embedder import DEMO_EMBED_NAME
    from serving.engines import vllm_available
    from tests.support import start_server

    if demo_model.demo_adapter_dir() is None:
        pytest.skip("no adapter committed")
    engine = "vllm" if vllm_available() else "hf"
    log = tmp_path / "server.log"
    env = {"NEXUS_K_CACHE_DIR": str(converted.parent.parent)}  # the fixture's converted cache
    server = start_server(engine, None, log, max_model_len=512, args=["--kv-cache-gib", "1"], env=env)
    try:
        client = openai.OpenAI(base_url=server.api, api_key="unused")
        models = {m.id: m for m in client.models.list().data}
        assert set(models) == {demo_model.DEMO_BASE_NAME, demo_model.DEMO_MODEL_NAME, DEMO_EMBED_NAME}
        # the bundled Korean embedding model, beside the chat model: related sentences score higher
        vectors = [d.embedding for d in client.embeddings.create(
            model=DEMO_EMBED_NAME, input=["서울은 대한민국의 수도입니다", "수도 서울", "김치찌개 만드는 법"]).data]
        close, far = (sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:])
        assert len(vectors[0]) == 640 and close > far
        reply = client.chat.completions.create(
            model=demo_model.DEMO_MODEL_NAME, messages=[{"role": "user", "content": "주말에 뭐 하면 좋을까?"}],
            max_tokens=32, temperature=0,
        )
        text = reply.choices[0].message.content
        assert reply.model == demo_model.DEMO_MODEL_NAME
        assert len(HANGUL.findall(text)) >= 3, text
    finally:
        server.stop()
