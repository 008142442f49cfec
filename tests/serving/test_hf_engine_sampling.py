"""The transformers engine's sampling: seeds, penalties, stops, logprobs and structured outputs."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest
import torch
import xgrammar as xgr
from transformers import AutoModelForCausalLM

from serving.engines.base import EngineError, SamplingSettings, StructuredOutput
from serving.engines.hf import HFEngine
from tests.serving.hf_engine_support import collect, greedy, reference_greedy, run

SCHEMA = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "city": {"enum": ["서울", "부산", "대구"]},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
    },
    "required": ["ok", "city", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    eng = run(HFEngine.create(str(tiny_model_dir)))
    yield eng
    run(eng.shutdown())


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def prompt(engine):
    return engine.tokenizer("점순이는 닭을 몰고 왔다").input_ids


def sampled(seed: int | None, **kwargs) -> SamplingSettings:
    return SamplingSettings(max_tokens=12, min_tokens=12, temperature=1.0, seed=seed, **kwargs)


def test_same_seed_same_tokens_whatever_the_batch(engine, prompt):
    solo = run(collect(engine, prompt, sampled(7), "seed-solo")).token_ids

    async def in_company():
        others = [collect(engine, prompt[: 3 + i], sampled(100 + i, top_p=0.9), f"other-{i}") for i in range(5)]
        mine = collect(engine, prompt, sampled(7), "seed-batch")
        return (await asyncio.gather(mine, *others))[0].token_ids

    assert run(in_company()) == solo
    assert run(collect(engine, prompt, sampled(8), "seed-other")).token_ids != solo
    assert run(collect(engine, prompt, sampled(None), "unseeded")).token_ids != solo


def test_top_k_one_and_tiny_top_p_are_greedy(engine, hf_model, prompt):
    expected = reference_greedy(hf_model, prompt, 10, min_new_tokens=10)
    top_k = run(collect(engine, prompt, SamplingSettings(max_tokens=10, min_tokens=10, top_k=1, seed=1), "k1"))
    top_p = run(collect(engine, prompt, SamplingSettings(max_tokens=10, min_tokens=10, top_p=1e-6, seed=1), "p0"))
    assert top_k.token_ids == expected
    assert top_p.token_ids == expected


def test_repetition_penalty_matches_transformers(engine, hf_model, prompt):
    got = run(collect(engine, prompt, greedy(max_tokens=16, min_tokens=16, repetition_penalty=1.8), "rep"))
    assert got.token_ids == reference_greedy(hf_model, prompt, 16, min_new_tokens=16, repetition_penalty=1.8)
    assert got.token_ids != reference_greedy(hf_model, prompt, 16, min_new_tokens=16)


@pytest.mark.parametrize("penalty", [1e-300, 1e-30])
def test_extreme_repetition_penalty_still_samples(engine, prompt, penalty):
    # Found by fuzzing: a penalty that underflows float32 turned logits into inf/NaN and the step failed (500).
    settings = SamplingSettings(max_tokens=4, min_tokens=4, temperature=0.5, seed=3, repetition_penalty=penalty)
    got = run(collect(engine, prompt, settings, f"tiny-penalty-{penalty}"))
    assert len(got.token_ids) == 4 and all(0 <= t < engine.vocab_size for t in got.token_ids)


def test_presence_and_frequency_penalties_match_a_reference_loop(engine, hf_model, prompt):
    presence, frequency, steps = 0.7, 1.3, 12
    ids, counts = list(prompt), torch.zeros(engine.vocab_size)
    with torch.inference_mode():
        for _ in range(steps):
            logits = hf_model(torch.tensor([ids])).logits[0, -1].float()
            logits -= frequency * counts + presence * (counts > 0).float()
            token = int(logits.argmax())
            counts[token] += 1
            ids.append(token)
    params = greedy(max_tokens=steps, presence_penalty=presence, frequency_penalty=frequency, ignore_eos=True)
    assert run(collect(engine, prompt, params, "pen")).token_ids == ids[len(prompt):]


def test_stop_string_cuts_text_and_sets_stop_reason(engine):
    prompt = engine.tokenizer("오늘 날씨가 좋네요 그리고").input_ids
    free = run(collect(engine, prompt, greedy(max_tokens=30, min_tokens=30), "free"))
    text = free.text
    # A stop string that spans a token boundary, with text before it.
    # (A random model often writes half characters, so take the longest clean window, 3 or 2 characters.)
    stop = next(text[i : i + n] for n in (3, 2) for i in range(8, len(text) - n) if "\ufffd" not in text[i : i + n])
    done = run(collect(engine, prompt, greedy(max_tokens=30, min_tokens=30, stop=["없는멈춤", stop]), "stop"))
    assert done.text == free.text[: free.text.find(stop)]
    assert done.last.finish_reason == "stop"
    assert done.last.stop_reason == stop
    assert done.token_ids == free.token_ids[: len(done.token_ids)]
    assert all(stop not in d.text for d in done.deltas)


def test_stop_token_ids_end_generation(engine, prompt):
    free = run(collect(engine, prompt, greedy(max_tokens=20, min_tokens=20), "free-ids")).token_ids
    stop_id = free[6]
    done = run(collect(engine, prompt, greedy(max_tokens=20, stop_token_ids=[stop_id]), "stop-id"))
    assert done.token_ids == free[: free.index(stop_id) + 1]
    assert (done.last.finish_reason, done.last.stop_reason) == ("stop", stop_id)


def test_min_tokens_blocks_stop_token_ids(engine, prompt):
    free = run(collect(engine, prompt, greedy(max_tokens=20, min_tokens=20), "free-min")).token_ids
    stop_id = free[0]
    done = run(collect(engine, prompt, greedy(max_tokens=8, min_tokens=8, stop_token_ids=[stop_id]), "min"))
    assert len(done.token_ids) == 8
    assert stop_id not in done.token_ids


def test_logprobs_match_a_direct_forward_pass(engine, hf_model, prompt):
    done = run(collect(engine, prompt, greedy(max_tokens=6, min_tokens=6, logprobs=3), "lp"))
    with torch.inference_mode():
        logits = hf_model(torch.tensor([prompt + done.token_ids])).logits[0].float()
    expected = torch.log_softmax(logits, dim=-1)[len(prompt) - 1 : -1]
    entries = [e for d in done.deltas for e in d.logprobs]
    assert [e.token_id for e in entries] == done.token_ids
    for row, entry in zip(expected, entries, strict=True):
        assert entry.logprob == pytest.approx(float(row[entry.token_id]), abs=1e-4)
        values, ids = row.topk(3)
        assert list(entry.top) == ids.tolist()
        assert list(entry.top.values()) == pytest.approx(values.tolist(), abs=1e-4)


def test_prompt_logprobs_match_a_direct_forward_pass(engine, hf_model, prompt):
    done = run(collect(engine, prompt, greedy(max_tokens=2, prompt_logprobs=2), "plp"))
    entries = done.deltas[0].prompt_logprobs
    assert all(d.prompt_logprobs is None for d in done.deltas[1:])
    assert entries[0] is None and len(entries) == len(prompt)
    with torch.inference_mode():
        logprobs = torch.log_softmax(hf_model(torch.tensor([prompt])).logits[0].float(), dim=-1)
    for position, entry in enumerate(entries[1:], start=1):
        assert entry.token_id == prompt[position]
        assert entry.logprob == pytest.approx(float(logprobs[position - 1, prompt[position]]), abs=1e-4)
        assert list(entry.top) == logprobs[position - 1].topk(2).indices.tolist()


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_json_schema_output_parses_and_validates(engine, prompt, seed):
    params = SamplingSettings(max_tokens=80, temperature=0.0 if seed is None else 1.0, seed=seed,
                              structured=StructuredOutput(json_schema=SCHEMA))
    done = run(collect(engine, prompt, params, f"json-{seed}"))
    assert done.last.finish_reason == "stop"
    value = json.loads(done.text)
    jsonschema.validate(value, SCHEMA)
    assert done.text == json.dumps(value, ensure_ascii=False)  # no free whitespace


def test_json_object_output_is_json_so_far(engine, prompt):
    params = SamplingSettings(max_tokens=12, seed=5, structured=StructuredOutput(json_object=True))
    done = run(collect(engine, prompt, params, "json-object"))
    assert done.text.startswith("{")
    checker = xgr.GrammarMatcher(xgr.GrammarCompiler(
        xgr.TokenizerInfo.from_huggingface(engine.tokenizer, vocab_size=engine.vocab_size)
    ).compile_builtin_json_grammar())
    assert checker.accept_string(done.text)
    if done.last.finish_reason == "stop":
        assert isinstance(json.loads(done.text), dict)


def test_choice_output_is_one_of_the_choices(engine, prompt):
    choices = ["예", "아니요", "잘 모르겠습니다"]

    def params(seed: int) -> SamplingSettings:
        return SamplingSettings(max_tokens=20, seed=seed, structured=StructuredOutput(choice=choices))

    async def many():
        return await asyncio.gather(*[collect(engine, prompt, params(s), f"choice-{s}") for s in range(6)])

    for done in run(many()):
        assert done.text in choices
        assert done.last.finish_reason == "stop"


def test_invalid_schema_is_an_engine_error(engine, prompt):
    params = SamplingSettings(max_tokens=4, structured=StructuredOutput(json_schema={"type": "nonsense"}))
    with pytest.raises(EngineError, match="invalid structured output: Unsupported type"):
        run(collect(engine, prompt, params, "bad-schema"))
    assert engine.num_unfinished_requests() == 0
