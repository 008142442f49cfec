"""vLLM serves a structurally pruned checkpoint unchanged: its greedy tokens and logprobs are transformers'."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serving.engines import vllm_available


def _llama_mha():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # Multi-head attention with biases: pruning slices q/k/v rows (key-value heads go with their query head).
    config = LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=192, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, head_dim=32, attention_bias=True,
                         max_position_embeddings=128, initializer_range=0.2, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval(), [[0, 2], [1, 3]]


def _gemma3_mqa():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(1)
    # Gemma 3 270M's layout in miniature: 4 query heads, 1 key-value head, head_dim != hidden / heads,
    # q_norm/k_norm, query_pre_attn_scalar, sliding and global layers, tied embeddings.
    config = Gemma3TextConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                              sliding_window=16, layer_types=["sliding_attention", "sliding_attention",
                                                              "full_attention"],
                              max_position_embeddings=128, initializer_range=0.2)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                param.normal_(0, 0.5)
    return model, [[0, 3], [1, 2], [2, 3]]


@pytest.mark.slow
@pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")
@pytest.mark.parametrize("build", [_llama_mha, _gemma3_mqa], ids=["llama_mha_keep2of4", "gemma3_mqa_keep2of4"])
def test_vllm_serves_the_pruned_checkpoint_like_transformers(build, tmp_path) -> None:
    from bench.pruning_vllm import run_worker, transformers_agreement
    from quantum_kernels.structural import attention_shape, prune_attention_heads

    model, rows = build()
    shape = attention_shape(model)
    mask = np.zeros((shape.num_layers, shape.num_heads), dtype=np.int64)
    for layer, heads in enumerate(rows):
        mask[layer, heads] = 1
    smaller = prune_attention_heads(model, mask)
    smaller.save_pretrained(tmp_path, safe_serialization=True)
    assert smaller.config.num_attention_heads == len(rows[0])

    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 128, size=n).tolist() for n in (7, 19)]
    got = run_worker({"model": str(tmp_path), "dtype": "float32", "max_model_len": 64, "check_prompts": prompts,
                      "check_tokens": 12}, timeout=600)
    # Each of vLLM's greedy tokens is transformers' argmax on the same prefix (so transformers' greedy
    # decoding produces the same sequence), with the same logprob.
    agreement = transformers_agreement(tmp_path, prompts, got["greedy"])
    assert agreement["greedy_tokens_equal"], agreement
    assert agreement["max_logprob_diff"] < 1e-3, agreement
    assert agreement["min_top2_margin"] > 1e-4, agreement  # the comparison is not decided by near-ties


def test_budgets_whose_config_transformers_rejects_are_refused_up_front() -> None:
    """transformers 5 validates that hidden_size is a multiple of num_attention_heads (even with head_dim set):
    3 of 4 heads on a 64-wide Gemma 3 (and on Gemma 3 270M's 640) cannot be saved or loaded, so vLLM cannot
    serve it either; the budget check says so before any scoring, and names the budgets that work."""
    from quantum_kernels.structural import check_writable_budget, config_problem, pruned_config, writable_budgets

    model, _ = _gemma3_mqa()
    assert writable_budgets(model) == [1, 2, 4]
    check_writable_budget(model, 2)
    with pytest.raises(ValueError, match=r"keeping 3 of 4 heads.*budgets that can be written: \[1, 2, 4\]"):
        check_writable_budget(model, 3)
    assert "multiple of the number of attention heads" in config_problem(pruned_config(model.config, 3, 1, 32))
    llama, _ = _llama_mha()
    assert writable_budgets(llama) == [1, 2, 4]
