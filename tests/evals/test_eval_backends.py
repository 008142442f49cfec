"""Backends on the tiny model: batched, context-sharing scores equal a plain forward pass per request."""

from __future__ import annotations

import pytest
import torch

from evals.backends.base import GenerationRequest, LoglikelihoodRequest, cut_at_stop, encode_pair

CONTEXTS = ["콜라독립 815는 코카콜라에서 만들었나요? 답변: ", "물병을 냉동실에 넣었다.  그래서", "짧은 문장"]
CHOICES = ["아니오", "예", "물이 얼었다.", "부정적인 의견입니다 정말로"]
REQUESTS = [LoglikelihoodRequest(c, " " + x) for c in CONTEXTS for x in CHOICES]


def reference_scores(backend, requests):
    """Log-likelihood of each continuation from one unbatched forward pass over context + continuation."""
    out = []
    for request in requests:
        ctx, cont = encode_pair(backend.tokenizer, request.context, request.continuation)
        with torch.inference_mode():
            logits = backend.model(torch.tensor([ctx + cont])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        positions = range(len(ctx) - 1, len(ctx) + len(cont) - 1)
        out.append((sum(logprobs[p, t].item() for p, t in zip(positions, cont, strict=True)),
                    all(logprobs[p].argmax().item() == t for p, t in zip(positions, cont, strict=True))))
    return out


def test_encode_pair_moves_trailing_spaces(hf_backend) -> None:
    ctx, cont = encode_pair(hf_backend.tokenizer, "답변: ", " 예")
    assert hf_backend.tokenizer.decode(ctx) == "답변:"
    assert hf_backend.tokenizer.decode(cont) == "  예"


@pytest.mark.parametrize("batch_size", [1, 3])
def test_hf_loglikelihood_equals_plain_forward(hf_backend, batch_size: int) -> None:
    hf_backend.batch_size = batch_size
    got = hf_backend.loglikelihood(REQUESTS)
    for result, (logprob, greedy) in zip(got, reference_scores(hf_backend, REQUESTS), strict=True):
        assert result.logprob == pytest.approx(logprob, abs=1e-3)
        assert result.is_greedy == greedy


def test_hf_generation_is_greedy_and_cut_at_stop(hf_backend) -> None:
    requests = [GenerationRequest("안녕하세요", max_tokens=6), GenerationRequest("질문: 뭐예요?", 4, chat=True),
                GenerationRequest("안녕하세요", max_tokens=6, stop=("\n",))]
    first = hf_backend.generate_until(requests)
    assert first == hf_backend.generate_until(requests)  # greedy: the same twice
    assert "\n" not in first[2]
    assert cut_at_stop("가나\n다라", ["\n", "다"]) == "가나"


def test_engine_backend_matches_hf_backend(tiny_model_dir, hf_backend) -> None:
    """The project's own transformers engine, driven through the Engine protocol."""
    from evals.backends.engine import EngineBackend

    backend = EngineBackend(str(tiny_model_dir), kind="hf", dtype="float32", max_model_len=1024)
    try:
        got = backend.loglikelihood(REQUESTS[:6])
        expected = hf_backend.loglikelihood(REQUESTS[:6])
        for a, b in zip(got, expected, strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
            assert a.is_greedy == b.is_greedy
        texts = backend.generate_until([GenerationRequest("안녕하세요", max_tokens=4)])
        assert isinstance(texts[0], str)
    finally:
        backend.close()


@pytest.mark.slow
def test_openai_backend_against_our_server(served_tiny: str, hf_backend) -> None:
    """echo + logprobs + max_tokens=0 on `nexus-k serve` gives the scores the local model gives."""
    from evals.backends.openai_api import OpenAIBackend

    backend = OpenAIBackend("tiny-ko", base_url=served_tiny, api_key="unused", concurrency=4)
    got = backend.loglikelihood(REQUESTS[:8])
    expected = hf_backend.loglikelihood(REQUESTS[:8])
    for a, b in zip(got, expected, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
    texts = backend.generate_until([GenerationRequest("안녕하세요", 4), GenerationRequest("뭐 해?", 4, chat=True)])
    assert all(isinstance(t, str) for t in texts)
    chat = OpenAIBackend("tiny-ko", base_url=served_tiny, api_key="unused", api="chat")
    assert not chat.supports_loglikelihood


@pytest.mark.slow
def test_vllm_engine_backend_matches_hf_backend(tiny_model_dir, hf_backend, tmp_path, monkeypatch) -> None:
    """vLLM in-process (through serving.engines.load_engine) scores like the transformers backend."""
    from serving.engines import vllm_available

    if not vllm_available():
        pytest.skip("vLLM is not installed")
    from evals.backends.engine import EngineBackend

    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm-cache"))
    backend = EngineBackend(str(tiny_model_dir), kind="vllm", dtype="float32", enforce_eager=True,
                            kv_cache_gib=1, max_model_len=1024)
    try:
        got = backend.loglikelihood(REQUESTS)
        expected = hf_backend.loglikelihood(REQUESTS)
        for a, b in zip(got, expected, strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-2)
        assert backend.describe()["backend"] == "vllm"
        texts = backend.generate_until([GenerationRequest("안녕하세요", max_tokens=4, stop=("\n",))])
        assert isinstance(texts[0], str)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def lora_adapter(tiny_model_dir, tmp_path_factory):
    """A random (non-zero) LoRA adapter on the tiny model, saved as PEFT writes it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    path = tmp_path_factory.mktemp("lora")
    get_peft_model(model, config).save_pretrained(path)
    return path


def test_hf_backend_with_adapter_scores_what_peft_scores(tiny_model_dir, hf_backend, lora_adapter) -> None:
    from peft import PeftModel

    from evals.backends.hf import HFBackend

    tuned = HFBackend(str(tiny_model_dir), dtype="float32", batch_size=3, adapter=str(lora_adapter))
    assert tuned.describe()["adapter"] == str(lora_adapter)
    got = tuned.loglikelihood(REQUESTS[:4])
    base = hf_backend.loglikelihood(REQUESTS[:4])
    assert all(abs(g.logprob - b.logprob) > 1e-3 for g, b in zip(got, base, strict=True))  # the adapter acts
    unmerged = PeftModel.from_pretrained(tuned.model.__class__.from_pretrained(tiny_model_dir, dtype=torch.float32),
                                         str(lora_adapter)).eval()
    reference = type("Ref", (), {"tokenizer": tuned.tokenizer, "model": unmerged})
    for result, (logprob, _) in zip(got, reference_scores(reference, REQUESTS[:4]), strict=True):
        assert result.logprob == pytest.approx(logprob, abs=1e-3)
