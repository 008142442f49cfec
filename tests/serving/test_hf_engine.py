"""The transformers engine: greedy parity with transformers, batching, streaming, abort, errors."""

from __future__ import annotations

import asyncio

import pytest
from transformers import AutoModelForCausalLM

from serving.engines.base import Engine, EngineError, SamplingSettings
from serving.engines.hf import HFEngine
from tests.serving.hf_engine_support import collect, greedy, reference_greedy, run

TEXTS = [
    "안녕하세요",
    "오늘 점심에 무엇을 먹을까요?",
    "동백꽃이 피었다",
    "점순이는 닭을 몰고 왔다 그리고 나는 감자를",
    "서울",
    "한국어 언어 모델을 만듭니다. 작은 모델이지만 빠르게",
    "봄",
    "우리 집 수탉이 또 싸움에 졌다",
]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    eng = run(HFEngine.create(str(tiny_model_dir), max_num_seqs=16))
    yield eng
    run(eng.shutdown())


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def prompts(engine):
    return [engine.tokenizer(t).input_ids for t in TEXTS]


def test_satisfies_engine_protocol(engine, tiny_model_dir):
    assert isinstance(engine, Engine)
    assert engine.name == "hf"
    assert engine.model_path == str(tiny_model_dir)
    assert engine.max_model_len == 2048
    assert engine.lora_names() == []
    assert engine.eos_token_ids >= {engine.tokenizer.eos_token_id}


def test_greedy_matches_transformers_generate(engine, hf_model, prompts):
    for i, prompt in enumerate(prompts[:3]):
        done = run(collect(engine, prompt, greedy(max_tokens=24), f"greedy-{i}"))
        expected = reference_greedy(hf_model, prompt, 24)
        assert done.token_ids == expected
        assert done.last.finish_reason == ("stop" if expected[-1] in engine.eos_token_ids else "length")
        assert all(len(d.token_ids) == 1 for d in done.deltas)


def test_concurrent_requests_share_forward_passes(engine, hf_model, prompts):
    before = engine.stats().decode_steps

    async def all_at_once():
        return await asyncio.gather(*[
            collect(engine, p, greedy(max_tokens=20, min_tokens=20), f"batch-{i}") for i, p in enumerate(prompts)
        ])

    results = run(all_at_once())
    steps = engine.stats().decode_steps - before
    for prompt, done in zip(prompts, results, strict=True):
        assert done.token_ids == reference_greedy(hf_model, prompt, 20, min_new_tokens=20)
        assert done.last.finish_reason == "length"
    assert engine.stats().peak_batch >= 4
    # Solo decoding would take 8 * 19 steps; batched it takes about 19 (more if prefills interleave).
    assert steps < 3 * 19
    assert engine.num_unfinished_requests() == 0
    assert engine.stats().running == 0


def test_new_request_joins_a_running_batch(engine, hf_model, prompts):
    async def staggered():
        long_task = asyncio.create_task(collect(engine, prompts[3], greedy(max_tokens=60, min_tokens=60), "long"))
        while engine.stats().running == 0:
            await asyncio.sleep(0.001)
        short = await collect(engine, prompts[1], greedy(max_tokens=8, min_tokens=8), "short")
        still_running = not long_task.done()
        return short, await long_task, still_running

    short, long_, joined_midway = run(staggered())
    assert joined_midway, "the short request had to wait for the long one"
    assert short.token_ids == reference_greedy(hf_model, prompts[1], 8, min_new_tokens=8)
    assert long_.token_ids == reference_greedy(hf_model, prompts[3], 60, min_new_tokens=60)


def test_streamed_text_is_the_decoded_output(engine, prompts):
    done = run(collect(engine, prompts[0], greedy(max_tokens=30, min_tokens=30), "text"))
    assert done.text == engine.tokenizer.decode(done.token_ids, skip_special_tokens=True)


def test_abort_ends_the_stream_and_frees_the_slot(engine, prompts):
    async def abort_midway():
        deltas = []
        async for delta in engine.generate(prompts[0], greedy(max_tokens=500, min_tokens=500), "to-abort"):
            deltas.append(delta)
            if len(deltas) == 3:
                await engine.abort("to-abort")
        return deltas

    deltas = run(abort_midway())
    assert deltas[-1].finish_reason == "abort"
    assert 3 <= len(deltas) < 500
    assert engine.num_unfinished_requests() == 0


def test_consumer_leaving_aborts_the_request(engine, prompts):
    async def leave_early():
        stream = engine.generate(prompts[0], greedy(max_tokens=500, min_tokens=500), "leaver")
        await anext(stream)
        await stream.aclose()
        for _ in range(500):
            if engine.stats().running == 0:
                return True
            await asyncio.sleep(0.01)
        return False

    assert run(leave_early())
    assert engine.num_unfinished_requests() == 0


def test_max_model_len_ends_with_length_and_long_prompts_are_refused(tiny_model_dir, prompts):
    async def scenario():
        small = await HFEngine.create(str(tiny_model_dir), max_model_len=16)
        try:
            prompt = prompts[3][:10]
            done = await collect(small, prompt, greedy(max_tokens=100, min_tokens=100), "ctx")
            with pytest.raises(EngineError, match=r"maximum context length is 16 tokens.*\(17 in the messages"):
                await collect(small, list(range(7, 24)), greedy(max_tokens=1), "too-long")
            return done
        finally:
            await small.shutdown()

    done = run(scenario())
    assert len(done.token_ids) == 6
    assert done.last.finish_reason == "length"


def test_max_tokens_zero_returns_prompt_logprobs_only(engine, prompts):
    done = run(collect(engine, prompts[1], SamplingSettings(max_tokens=0, prompt_logprobs=0), "echo"))
    assert len(done.deltas) == 1
    assert done.token_ids == []
    assert done.last.finish_reason == "length"
    assert len(done.last.prompt_logprobs) == len(prompts[1])
    assert done.last.prompt_logprobs[0] is None


@pytest.mark.parametrize(
    ("params", "kwargs", "message"),
    [
        (greedy(max_tokens=4), {"lora_name": "nope"}, "unknown LoRA adapter 'nope'"),
        (greedy(max_tokens=-1), {}, "max_tokens"),
        (SamplingSettings(max_tokens=4, top_p=0.0), {}, "top_p"),
        (SamplingSettings(max_tokens=4, temperature=-1.0), {}, "temperature"),
    ],
)
def test_invalid_requests_raise_engine_error(engine, prompts, params, kwargs, message):
    with pytest.raises(EngineError, match=message):
        run(collect(engine, prompts[0], params, "bad", **kwargs))
    assert engine.num_unfinished_requests() == 0


def test_empty_prompt_and_out_of_vocabulary_ids_are_refused(engine):
    with pytest.raises(EngineError, match="empty"):
        run(collect(engine, [], greedy(max_tokens=2), "empty"))
    with pytest.raises(EngineError, match="outside the vocabulary"):
        run(collect(engine, [1, engine.vocab_size], greedy(max_tokens=2), "oov"))


def test_shutdown_refuses_new_requests(tiny_model_dir, prompts):
    async def scenario():
        eng = await HFEngine.create(str(tiny_model_dir))
        await eng.shutdown()
        await collect(eng, prompts[0], greedy(max_tokens=2), "late")

    with pytest.raises(EngineError, match="shut down"):
        run(scenario())
