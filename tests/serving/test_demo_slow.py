"""End to end on the real packaged GGUF: convert it, trim its vocabulary, then chat in Korean through the Gemma
template; the bundled adapters give the same tokens and vectors on the trimmed model as on the untrimmed one."""

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
    from transformers import AutoTokenizer

    record = json.loads((converted / demo_model.MARKER_FILE).read_text())
    assert record["source_sha256"] == demo_model.PINNED_GGUF_SHA256
    assert record["version"] == demo_model.CONVERSION_VERSION
    vocabulary = record["vocabulary"]
    assert vocabulary["of"] == 262_144 and 30_000 < vocabulary["kept"] < 45_000
    assert vocabulary["recipe"]["sources"] and vocabulary["token_ids_sha256"]
    generation = json.loads((converted / "generation_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert generation["eos_token_id"] == record["eos_token_ids"]
    assert tokenizer.convert_ids_to_tokens(generation["eos_token_id"]) == ["<eos>", "<end_of_turn>"]
    assert (converted / "GEMMA_TERMS.html").is_file()
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config and config["vocab_size"] == vocabulary["kept"] == len(tokenizer)
    full = converted.parent / demo_model.DEMO_FULL_NAME
    assert json.loads((full / "config.json").read_text())["vocab_size"] == 262_144
    assert set(json.loads((full / "generation_config.json").read_text())["eos_token_id"]) == {1, 106}
    started = time.perf_counter()
    assert demo_model.prepare_demo_model(progress=False) == converted
    assert demo_model.prepare_demo_model(progress=False, full_vocab=True) == full
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
    from tests.serving.test_ingest import make_hwpx
    from tests.support import start_server
    from tests.web.make_screenshot_cited import DOCUMENT_NAME, QUESTION, REGULATION

    if demo_model.demo_adapter_dir() is None:
        pytest.skip("no adapter committed")
    engine = "vllm" if vllm_available() else "hf"
    log = tmp_path / "server.log"
    env = {"NEXUS_K_CACHE_DIR": str(converted.parent.parent)}  # the fixture's converted cache
    server = start_server(engine, None, log, max_model_len=1024, args=["--kv-cache-gib", "1"], env=env)
    try:
        client = openai.OpenAI(base_url=server.api, api_key="unused")
        models = {m.id: m for m in client.models.list().data}
        assert {demo_model.DEMO_BASE_NAME, demo_model.DEMO_MODEL_NAME, DEMO_EMBED_NAME} <= set(models)
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
        # Document Q&A as the web page's screenshot runs it: a Korean HWPX regulation, a question about an
        # article kind the adapter never trained on (sick leave), answered from it with a citation.
        uploaded = client.files.create(file=(DOCUMENT_NAME, make_hwpx(REGULATION)), purpose="assistants")
        store = client.vector_stores.create(name="복무 규정", file_ids=[uploaded.id])
        for _ in range(600):
            if client.vector_stores.retrieve(store.id).file_counts.completed == 1:
                break
            time.sleep(0.5)
        answer = client.responses.create(model=demo_model.DEMO_MODEL_NAME, input=QUESTION, temperature=0,
                                         max_output_tokens=48,
                                         tools=[{"type": "file_search", "vector_store_ids": [store.id]}])
        cited = [a.filename for item in answer.output if item.type == "message"
                 for part in item.content for a in part.annotations]
        assert "60" in answer.output_text and cited == [DOCUMENT_NAME], answer.output_text
    finally:
        server.stop()


ADAPTERS = Path(demo_model.__file__).resolve().parent / "adapters"
# Korean and English prompts made of kept tokens; their greedy replies must not change with the trim.
PROMPTS = ["주말에 뭐 하면 좋을까?", "오늘 너무 피곤해요.", "영화 추천해 주세요.",
           "Please explain what free software means.", "Write a short note to a friend."]
OUT_OF_VOCABULARY = ["鬱陵島 饕餮 齟齬 蠶食 魑魅魍魎", "기분 😀🥹🫠🧑‍🚀🏳️‍🌈 최고 🦜🪿",
                     "สวัสดีครับ ยินดีที่ได้รู้จัก", "東京の天気は晴れです。", "∮ E·dA = Q/ε₀ 𝔘𝔫𝔦"]


def _adapters(task: str) -> list[Path]:
    return sorted(p.parent for p in ADAPTERS.glob("*/adapter_config.json")
                  if json.loads(p.read_text()).get("task_type") == task)


@pytest.fixture(scope="module")
def both(converted: Path):
    """(untrimmed, trimmed) folders and tokenizers."""
    from transformers import AutoTokenizer

    full = converted.parent / demo_model.DEMO_FULL_NAME
    return [(folder, AutoTokenizer.from_pretrained(folder)) for folder in (full, converted)]


@pytest.mark.parametrize("adapter", _adapters("CAUSAL_LM"), ids=lambda p: p.name)
def test_chat_adapters_score_kept_tokens_the_same_on_the_trimmed_model(both, adapter: Path) -> None:
    """The adapter's greedy reply on the trimmed model, scored by both models: the untrimmed model's logits
    for the kept tokens equal the trimmed model's, and its best kept token is the trimmed model's choice at
    every step. (Its best token overall can be one the trim dropped: the adapter, tuned on the trimmed base,
    never learned to push such tokens down, and the untrimmed model ends some replies with ` localVarAccept`
    where the trimmed one ends the turn; docs/models.md.)"""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    (full_dir, full_tok), (trim_dir, trim_tok) = both
    kept = torch.tensor(full_tok.convert_tokens_to_ids(trim_tok.convert_ids_to_tokens(list(range(len(trim_tok))))))
    models = [PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
                                        adapter).eval() for folder in (full_dir, trim_dir)]
    replies = []
    for prompt in PROMPTS:
        batch = trim_tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             return_tensors="pt", return_dict=True)
        prompt_len = batch["input_ids"].shape[1]
        with torch.inference_mode():
            trimmed_ids = models[1].generate(**batch, max_new_tokens=24, do_sample=False)[0]
            full_ids = kept[trimmed_ids]
            full_logits = models[0](input_ids=full_ids[None]).logits[0, prompt_len - 1:-1, kept]
            trim_logits = models[1](input_ids=trimmed_ids[None]).logits[0, prompt_len - 1:-1]
        assert torch.allclose(full_logits, trim_logits, atol=2e-3, rtol=0), (full_logits - trim_logits).abs().max()
        assert torch.equal(full_logits.argmax(-1), trimmed_ids[prompt_len:])
        replies.append(trim_tok.decode(trimmed_ids[prompt_len:], skip_special_tokens=True))
    assert sum(len(HANGUL.findall(text)) for text in replies[:3]) >= 9, replies


@pytest.mark.parametrize("adapter", _adapters("FEATURE_EXTRACTION"), ids=lambda p: p.name)
def test_embedding_adapters_give_the_same_vectors_for_kept_text(both, adapter: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModel

    texts = ["서울은 대한민국의 수도입니다", "이 영화 정말 재미있었어요",
             "The license permits copying and distribution."]
    vectors = []
    for folder, tokenizer in both:
        model = PeftModel.from_pretrained(AutoModel.from_pretrained(folder, dtype=torch.float32), adapter).eval()
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None]
        vectors.append((hidden * mask).sum(1) / mask.sum(1))
    assert torch.allclose(vectors[0], vectors[1], atol=1e-5, rtol=0), (vectors[0] - vectors[1]).abs().max()


def test_text_outside_the_kept_vocabulary_round_trips_through_bytes(both) -> None:
    (_, full), (_, trimmed) = both
    for text in OUT_OF_VOCABULARY:
        ids = trimmed.encode(text, add_special_tokens=False)
        assert trimmed.unk_token_id not in ids
        assert trimmed.decode(ids) == text
        assert len(ids) >= len(full.encode(text, add_special_tokens=False))
    for text in PROMPTS:  # kept text: the same pieces
        assert trimmed.tokenize(text) == full.tokenize(text)


def test_serve_demo_precision_int8_applies_the_rewritten_chat_adapter(converted: Path, tmp_path: Path) -> None:
    """`nexus-k serve --demo-precision int8`: the demo's smoothed int8 copy is made once into the cache and the
    bundled chat adapter, rewritten for it, still answers in Korean."""
    import openai

    from serving.engines import vllm_available
    from tests.support import start_server

    if demo_model.demo_adapter_dir() is None or not vllm_available():
        pytest.skip("needs the committed adapter and vLLM")
    cache = converted.parent.parent
    server = start_server("vllm", None, tmp_path / "server.log", max_model_len=512,
                          args=["--kv-cache-gib", "1", "--demo-precision", "int8"],
                          env={"NEXUS_K_CACHE_DIR": str(cache)})
    try:
        client = openai.OpenAI(base_url=server.api, api_key="unused")
        reply = client.chat.completions.create(
            model=demo_model.DEMO_MODEL_NAME, messages=[{"role": "user", "content": "주말에 뭐 하면 좋을까?"}],
            max_tokens=24, temperature=0,
        )
        assert len(HANGUL.findall(reply.choices[0].message.content)) >= 3, reply.choices[0].message.content
    finally:
        server.stop()
    int8 = cache / "models" / demo_model.DEMO_INT8_NAME
    assert json.loads((int8 / "nexus_k_int8.json").read_text())["calibration_texts"] == 320
    assert [p.name.split("-int8-")[0] for p in (cache / "adapters").iterdir()] == ["ko_chat"]
