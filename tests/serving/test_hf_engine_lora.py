"""The transformers engine with several LoRA adapters: selection per request, mixed batches, peft parity."""

from __future__ import annotations

import asyncio

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from serving.engines.base import EngineError
from serving.engines.hf import HFEngine
from tests.serving.hf_engine_support import collect, greedy, reference_greedy, run

ADAPTERS = {"ko-a": 1, "ko-b": 2}
"""Adapter name -> seed of its random weights."""


def build_adapter(model_dir, out_dir, seed: int):
    """A LoRA adapter with random A and B (so it changes outputs), saved with peft."""
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(base, config).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    return {name: str(build_adapter(tiny_model_dir, root / name, seed)) for name, seed in ADAPTERS.items()}


@pytest.fixture(scope="module")
def engine(tiny_model_dir, adapter_dirs):
    eng = run(HFEngine.create(str(tiny_model_dir), lora=adapter_dirs))
    yield eng
    run(eng.shutdown())


@pytest.fixture(scope="module")
def prompt(engine):
    return engine.tokenizer("동백꽃이 피었다").input_ids


def peft_reference(model_dir, adapter_dir, prompt, steps):
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir).eval()
    return reference_greedy(model, prompt, steps, min_new_tokens=steps)


def test_lists_its_adapters(engine):
    assert engine.lora_names() == ["ko-a", "ko-b"]


def test_adapter_output_matches_peft_and_differs_from_base(engine, tiny_model_dir, adapter_dirs, prompt):
    params = greedy(max_tokens=12, min_tokens=12)
    base = run(collect(engine, prompt, params, "base")).token_ids
    with_a = run(collect(engine, prompt, params, "a", lora_name="ko-a")).token_ids
    assert with_a == peft_reference(tiny_model_dir, adapter_dirs["ko-a"], prompt, 12)
    assert with_a != base
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert base == reference_greedy(plain, prompt, 12, min_new_tokens=12)


def test_mixed_adapter_batch_equals_solo_runs(engine, prompt):
    params = greedy(max_tokens=10, min_tokens=10)
    choices = [None, "ko-a", "ko-b", "ko-a", None, "ko-b"]
    solo = {name: run(collect(engine, prompt, params, f"solo-{name}", lora_name=name)).token_ids
            for name in set(choices)}
    assert len({tuple(ids) for ids in solo.values()}) == 3

    async def mixed():
        return await asyncio.gather(*[
            collect(engine, prompt, params, f"mixed-{i}", lora_name=name) for i, name in enumerate(choices)
        ])

    for name, done in zip(choices, run(mixed()), strict=True):
        assert done.token_ids == solo[name]


def test_unknown_adapter_names_the_known_ones(engine, prompt):
    with pytest.raises(EngineError, match=r"unknown LoRA adapter 'ko-c' \(known: ko-a, ko-b\)"):
        run(collect(engine, prompt, greedy(max_tokens=2), "unknown", lora_name="ko-c"))


def test_missing_adapter_folder_is_an_engine_error(tiny_model_dir, tmp_path):
    with pytest.raises(EngineError, match="cannot load LoRA adapters"):
        run(HFEngine.create(str(tiny_model_dir), lora={"gone": str(tmp_path / "missing")}))
