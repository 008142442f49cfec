"""Structural head pruning: remove attention heads from the weights and the config, so the model is smaller.

Llama, Gemma 3, Qwen and Mistral configs have one head count for every layer, so a model can only shrink
if every layer keeps the same number of query heads, and grouped-query attention stays uniform: every kept
key-value group keeps the same number of query heads, in every layer. For a (layers, heads) keep-mask that
satisfies this, :func:`prune_attention_heads` slices

* ``q_proj`` rows and ``o_proj`` columns of the removed query heads,
* ``k_proj`` / ``v_proj`` rows of key-value groups none of whose query heads remain (with multi-head
  attention that is every removed head's own key-value head; with one key-value head, as in Gemma 3 270M,
  it always stays),

and writes ``num_attention_heads``, ``num_key_value_heads`` and ``head_dim`` explicitly into the config
(``head_dim`` would otherwise be re-derived as ``hidden_size / heads``, changing the attention scale and the
rotary width). Norms on the head dimension (Gemma 3's ``q_norm`` / ``k_norm``) and
``query_pre_attn_scalar`` are per head width, so they are unchanged. The result is an ordinary checkpoint
that transformers and vLLM load as they are; its logits equal those of the full model with the removed
heads' ``o_proj`` columns zeroed (``tests/quantum/test_qk_structural.py``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class AttentionShape:
    """Head layout of a model (one count for all layers)."""

    num_layers: int
    num_heads: int
    """Query heads per layer."""
    num_kv_heads: int
    """Key-value heads per layer."""
    head_dim: int

    @property
    def heads_per_kv(self) -> int:
        """Query heads sharing one key-value head."""
        return self.num_heads // self.num_kv_heads


def text_config(config):
    """The decoder's config (the text part of a multimodal config; the same object, so edits stick)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def attention_shape(model: torch.nn.Module) -> AttentionShape:
    """Layers, query heads, key-value heads and head width from the model's config."""
    cfg = text_config(model.config)
    heads = int(cfg.num_attention_heads)
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    return AttentionShape(int(cfg.num_hidden_layers), heads, kv, head_dim)


def budget_groups(shape: AttentionShape, layers: list[int], keep_per_layer: int) -> list[tuple[list[int], int]]:
    """The QUBO's cardinality groups over candidate heads (layer-major order within ``layers``).

    Multi-head (one key-value head per query head) and single key-value-head models: one group per layer,
    ``keep k of its H heads``. Grouped-query models with several groups per layer: one group per key-value
    group, ``keep k/G of its H/G query heads``, so every group keeps as many queries and the model stays
    uniform (``k`` must then be a multiple of G).
    """
    h, g = shape.num_heads, shape.num_kv_heads
    if not 1 <= keep_per_layer <= h:
        raise ValueError(f"--keep-per-layer must be between 1 and {h} (query heads per layer)")
    groups: list[tuple[list[int], int]] = []
    for position, _ in enumerate(layers):
        base = position * h
        if g in (1, h):
            groups.append((list(range(base, base + h)), keep_per_layer))
        else:
            if keep_per_layer % g:
                raise ValueError(f"--keep-per-layer must be a multiple of num_key_value_heads={g} for this model, "
                                 f"so that every key-value group keeps the same number of query heads")
            r = h // g
            groups += [(list(range(base + j * r, base + (j + 1) * r)), keep_per_layer // g) for j in range(g)]
    return groups


def kept_kv_groups(mask: np.ndarray, shape: AttentionShape) -> tuple[list[list[int]], int]:
    """Per layer, the key-value groups that keep query heads, and the query heads each of them keeps.

    Raises ``ValueError`` unless the mask can be written as one uniform smaller architecture.
    """
    mask = np.asarray(mask)
    if mask.shape != (shape.num_layers, shape.num_heads):
        raise ValueError(f"mask must have shape ({shape.num_layers}, {shape.num_heads}), got {mask.shape}")
    per_layer = {int(mask[layer].sum()) for layer in range(shape.num_layers)}
    if len(per_layer) != 1 or 0 in per_layer:
        raise ValueError("every layer must keep the same (non-zero) number of query heads for a smaller "
                         f"checkpoint; the mask keeps {sorted(per_layer)}")
    r = shape.heads_per_kv
    groups, group_counts, queries_per_group = [], set(), set()
    for layer in range(shape.num_layers):
        counts = mask[layer].reshape(shape.num_kv_heads, r).sum(axis=1)
        kept = [int(j) for j in np.flatnonzero(counts)]
        groups.append(kept)
        group_counts.add(len(kept))
        queries_per_group |= {int(counts[j]) for j in kept}
    if len(group_counts) != 1 or len(queries_per_group) != 1:
        raise ValueError("grouped-query attention needs the same number of key-value groups in every layer "
                         "and the same number of query heads in each kept group")
    return groups, queries_per_group.pop()


def _attention_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    found = [(name, module) for name, module in model.named_modules()
             if name.endswith("self_attn") and all(isinstance(getattr(module, p, None), torch.nn.Linear)
                                                   for p in ("q_proj", "k_proj", "v_proj", "o_proj"))]
    if not found:
        raise ValueError("no attention blocks with q_proj, k_proj, v_proj and o_proj; not supported")
    return found


def _rows(heads: list[int], head_dim: int) -> torch.Tensor:
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])


@torch.no_grad()
def prune_attention_heads(model: torch.nn.Module, mask: np.ndarray) -> torch.nn.Module:
    """A new, smaller model of the same class without the heads whose ``mask`` (layers, heads) entry is 0."""
    shape = attention_shape(model)
    kv_groups, per_group = kept_kv_groups(mask, shape)
    modules = _attention_modules(model)
    if len(modules) != shape.num_layers:
        raise ValueError(f"found {len(modules)} attention blocks for {shape.num_layers} layers")
    d = shape.head_dim
    state = dict(model.state_dict())
    for layer, (name, _) in enumerate(modules):
        q_rows = _rows([int(h) for h in np.flatnonzero(mask[layer])], d)
        kv_rows = _rows(kv_groups[layer], d)
        for proj, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
            for part in ("weight", "bias"):
                key = f"{name}.{proj}.{part}"
                if key in state:
                    state[key] = state[key][rows].clone()
        state[f"{name}.o_proj.weight"] = state[f"{name}.o_proj.weight"][:, q_rows].clone()

    config = pruned_config(model.config, len(kv_groups[0]) * per_group, len(kv_groups[0]), d)
    smaller = type(model)(config).to(next(model.parameters()).dtype)
    missing, unexpected = smaller.load_state_dict(state, strict=False)
    # Only tied copies (lm_head = embeddings) may be absent from a state dict.
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if set(missing) - tied or unexpected:
        raise ValueError(f"pruned weights do not fit the smaller model: missing {sorted(set(missing) - tied)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}")
    smaller.eval()
    return smaller


def pruned_config(config, num_heads: int, num_kv_heads: int, head_dim: int):
    """A copy of ``config`` with the smaller head counts and ``head_dim`` written explicitly."""
    config = copy.deepcopy(config)
    cfg = text_config(config)
    cfg.num_attention_heads = num_heads
    cfg.num_key_value_heads = num_kv_heads
    cfg.head_dim = head_dim
    return config


def config_problem(config) -> str | None:
    """Why transformers would refuse to save or load ``config`` (its strict validators), or None.

    transformers 5 validates configs on save and on load; Llama's and Gemma 3's validators demand that
    ``hidden_size`` be a multiple of ``num_attention_heads`` even when ``head_dim`` is set explicitly (Gemma 3
    270M itself has 4 heads of 256 on a 640-wide residual). vLLM reads configs through transformers, so
    neither can load a checkpoint whose config fails here.
    """
    validate = getattr(config, "validate", None)
    if validate is None:
        return None
    try:
        validate()
    except Exception as err:  # huggingface_hub raises StrictDataclassClassValidationError
        return str(err.__cause__ or err)
    return None


def writable_budgets(model: torch.nn.Module) -> list[int]:
    """Query heads per layer that a smaller checkpoint can keep: uniform across key-value groups and accepted
    by the installed transformers' config validation (so transformers and vLLM load the result)."""
    shape = attention_shape(model)
    budgets = []
    for keep in range(1, shape.num_heads + 1):
        try:
            budget_groups(shape, [0], keep)
        except ValueError:
            continue
        kv = keep if shape.num_kv_heads == shape.num_heads else shape.num_kv_heads
        if config_problem(pruned_config(model.config, keep, kv, shape.head_dim)) is None:
            budgets.append(keep)
    return budgets


def check_writable_budget(model: torch.nn.Module, keep_per_layer: int) -> None:
    """Raise ``ValueError`` (naming the budgets that work) unless ``keep_per_layer`` heads per layer can be
    written as a checkpoint that transformers and vLLM load."""
    shape = attention_shape(model)
    budget_groups(shape, [0], keep_per_layer)
    kv = keep_per_layer if shape.num_kv_heads == shape.num_heads else shape.num_kv_heads
    problem = config_problem(pruned_config(model.config, keep_per_layer, kv, shape.head_dim))
    if problem:
        import transformers

        raise ValueError(f"keeping {keep_per_layer} of {shape.num_heads} heads per layer gives a config that "
                         f"transformers {transformers.__version__} refuses to save or load (so vLLM cannot serve "
                         f"it): {problem}; budgets that can be written: {writable_budgets(model)}")


def zero_heads(model: torch.nn.Module, mask: np.ndarray) -> None:
    """Zero the ``o_proj`` input columns of heads whose mask is 0 (the reference for structural pruning)."""
    shape = attention_shape(model)
    with torch.no_grad():
        for layer, (_, module) in enumerate(_attention_modules(model)):
            for h in np.flatnonzero(np.asarray(mask)[layer] == 0):
                module.o_proj.weight[:, h * shape.head_dim:(h + 1) * shape.head_dim] = 0


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
