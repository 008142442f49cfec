"""Structural head pruning: the smaller checkpoint computes exactly what the zeroed-heads model computes."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from quantum_kernels.structural import (
    attention_shape,
    budget_groups,
    count_parameters,
    kept_kv_groups,
    prune_attention_heads,
    zero_heads,
)


def _llama(heads: int, kv_heads: int, head_dim: int | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                         max_position_embeddings=64, attention_bias=True)
    model = LlamaForCausalLM(config).eval()
    if head_dim is None:
        # Like older Llama checkpoints: no head_dim in the config, so it is derived as hidden / heads, and a
        # pruned config must state it or the smaller model would get wider heads.
        del model.config.head_dim
    return model


def _gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(1)
    # Gemma 3 270M's layout in miniature: 4 query heads and 1 key-value head, head_dim != hidden / heads,
    # q_norm/k_norm, query_pre_attn_scalar, sliding and global layers, tied embeddings.
    config = Gemma3TextConfig(vocab_size=101, hidden_size=40, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                              sliding_window=8, layer_types=["sliding_attention", "sliding_attention",
                                                             "full_attention"],
                              max_position_embeddings=64)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norm weights so that q_norm/k_norm matter
        for name, param in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                param.normal_(0, 0.5)
    return model


def _mask(shape, keep_rows):
    mask = np.zeros((shape.num_layers, shape.num_heads), dtype=np.int64)
    for layer, heads in enumerate(keep_rows):
        mask[layer, heads] = 1
    return mask


CASES = {
    # name: (model builder, kept heads per layer)
    "llama_mha": (lambda: _llama(4, 4), [[0, 2], [1, 3], [2, 3]]),
    "llama_mqa": (lambda: _llama(4, 1), [[1], [3], [0]]),
    "llama_gqa": (lambda: _llama(6, 3, head_dim=8), [[0, 3, 5], [1, 2, 4], [0, 2, 5]]),
    "gemma3_mqa": (_gemma3, [[0, 3], [1, 2], [2, 3]]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_pruned_checkpoint_logits_equal_zeroed_heads_logits(name, tmp_path):
    from transformers import AutoModelForCausalLM

    build, rows = CASES[name]
    model = build()
    shape = attention_shape(model)
    mask = _mask(shape, rows)
    ids = torch.randint(0, model.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(input_ids=ids).logits
    smaller = prune_attention_heads(model, mask)
    smaller.save_pretrained(tmp_path)
    reference = copy.deepcopy(model)
    zero_heads(reference, mask)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype="float32").eval()
    with torch.no_grad():
        zeroed = reference(input_ids=ids).logits
        pruned = loaded(input_ids=ids).logits
    assert not torch.allclose(zeroed, full, atol=1e-3)  # the removed heads did matter
    torch.testing.assert_close(pruned, zeroed, atol=2e-5, rtol=1e-5)

    saved = json.loads((tmp_path / "config.json").read_text())
    kept = len(rows[0])
    kv_groups, _ = kept_kv_groups(mask, shape)
    assert saved["num_attention_heads"] == kept and saved["head_dim"] == shape.head_dim
    assert saved["num_key_value_heads"] == len(kv_groups[0])
    assert count_parameters(loaded) < count_parameters(model)
    attn, attn_full = loaded.model.layers[0].self_attn, model.model.layers[0].self_attn
    assert attn.scaling == attn_full.scaling and attn.head_dim == attn_full.head_dim
    assert attn.q_proj.out_features == kept * shape.head_dim
    assert attn.o_proj.in_features == kept * shape.head_dim


def test_mha_drops_key_value_heads_with_their_query_heads_and_mqa_keeps_its_one():
    mha, mqa = _llama(4, 4), _gemma3()
    small_mha = prune_attention_heads(mha, _mask(attention_shape(mha), [[0, 2]] * 3))
    small_mqa = prune_attention_heads(mqa, _mask(attention_shape(mqa), [[0, 2]] * 3))
    assert small_mha.config.num_key_value_heads == 2
    assert small_mha.model.layers[0].self_attn.k_proj.out_features == 2 * 12
    assert small_mqa.config.num_key_value_heads == 1
    assert small_mqa.model.layers[0].self_attn.k_proj.out_features == 16


@pytest.mark.parametrize(("rows", "fragment"), [
    ([[0, 1], [0], [1, 2]], r"same \(non-zero\) number"),
    ([[0, 1, 2], [0, 2, 4], [1, 3, 5]], "same number of key-value groups"),  # 3 heads of group 0 vs 1 each
])
def test_non_uniform_masks_are_refused(rows, fragment):
    model = _llama(6, 3, head_dim=8)
    with pytest.raises(ValueError, match=fragment):
        prune_attention_heads(model, _mask(attention_shape(model), rows))


def test_budget_groups_follow_the_key_value_layout():
    mha, gqa = attention_shape(_llama(4, 4)), attention_shape(_llama(6, 3, head_dim=8))
    assert budget_groups(mha, [0, 2], 2) == [([0, 1, 2, 3], 2), ([4, 5, 6, 7], 2)]
    assert budget_groups(gqa, [1], 3) == [([0, 1], 1), ([2, 3], 1), ([4, 5], 1)]
    with pytest.raises(ValueError, match="multiple of num_key_value_heads=3"):
        budget_groups(gqa, [0], 2)
    with pytest.raises(ValueError, match="between 1 and 4"):
        budget_groups(mha, [0], 5)
