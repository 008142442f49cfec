"""Per-head importance and pairwise redundancy of attention heads, and perplexity under a head mask.

Heads are gated at the input of each attention block's output projection (``o_proj``): its input is the
concatenation of the heads' outputs, so multiplying head h's slice by a gate ``xi_h`` switches the head
off (0) or leaves it (1). Zeroing head h's columns of ``o_proj`` has exactly the same effect, which is how
a chosen mask is written into the saved model.

* Importance (Michel, Levy & Neubig, 2019, "Are Sixteen Heads Really Better than One?"):
  ``I_h = E_x |dL(x) / d xi_h|`` at ``xi = 1``, one calibration sequence per x.
* Ablation importance: ``I_h = E_x [L(x; head h off) - L(x)]``, one forward pass per head and sequence.
  The gradient is a first-order estimate at ``xi = 1``; heads whose removal is catastrophic can have a
  small gradient there (Gemma 3 270M has such heads), so removing half of the heads needs the real effect.
* Redundancy: the Pearson correlation of two heads' contributions to the residual stream
  (``W_o[:, h] z_h`` over all calibration tokens and hidden dimensions), in absolute value.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class AttentionLayer:
    """One attention block whose heads can be gated."""

    index: int
    """Layer number."""
    o_proj: torch.nn.Linear
    """Its output projection (input = heads' outputs concatenated)."""
    num_heads: int
    """Query heads in this layer."""
    head_dim: int
    """Width of one head's output."""


def attention_layers(model: torch.nn.Module) -> list[AttentionLayer]:
    """The model's attention blocks with an ``o_proj`` (Llama, Gemma, Qwen, Mistral and alike)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = int(cfg.num_attention_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    layers = []
    for name, module in model.named_modules():
        if name.endswith("self_attn") and isinstance(getattr(module, "o_proj", None), torch.nn.Linear):
            o_proj = module.o_proj
            if o_proj.in_features != heads * head_dim:
                raise ValueError(f"{name}.o_proj has {o_proj.in_features} inputs, expected {heads} x {head_dim}")
            layers.append(AttentionLayer(len(layers), o_proj, heads, head_dim))
    if not layers:
        raise ValueError("no attention blocks with an o_proj found; this architecture is not supported")
    return layers


class HeadGates:
    """Multiplies every head's output by a gate (a (layers, heads) tensor) through forward pre-hooks.

    While ``capture`` is on, the heads' residual-stream contributions are also accumulated for the
    redundancy statistics. Use as a context manager so that the hooks are always removed.
    """

    def __init__(self, layers: list[AttentionLayer], requires_grad: bool = False) -> None:
        """Gates start at 1 (every head on)."""
        self.layers = layers
        self.gates = torch.ones(len(layers), layers[0].num_heads, requires_grad=requires_grad)
        self.capture = False
        total = len(layers) * layers[0].num_heads
        self.gram = torch.zeros(total, total, dtype=torch.float64)
        self.sums = torch.zeros(total, dtype=torch.float64)
        self.count = 0
        self._handles: list = []
        self._captured: list[torch.Tensor] = []

    def _hook(self, layer: AttentionLayer):
        def pre_hook(module, args):
            x = args[0]
            shape = x.shape
            heads = x.reshape(*shape[:-1], layer.num_heads, layer.head_dim)
            if self.capture:
                with torch.no_grad():
                    w = module.weight.reshape(module.out_features, layer.num_heads, layer.head_dim)
                    # (tokens, heads, hidden): each head's contribution to the residual stream.
                    contrib = torch.einsum("...hd,ohd->...ho", heads.detach().float(), w.float())
                    self._captured.append(contrib.reshape(-1, layer.num_heads, module.out_features))
            gated = heads * self.gates[layer.index].to(x.dtype)[:, None]
            return (gated.reshape(shape), *args[1:])
        return pre_hook

    def flush_capture(self) -> None:
        """Fold the contributions captured in the last forward pass into the correlation sums."""
        if not self._captured:
            return
        z = torch.cat([c.permute(1, 0, 2).reshape(c.shape[1], -1) for c in self._captured]).double()
        self.gram += z @ z.T
        self.sums += z.sum(dim=1)
        self.count += z.shape[1]
        self._captured.clear()

    def correlation(self) -> np.ndarray:
        """|Pearson correlation| between heads' contributions (flat head order: layer-major)."""
        mean = self.sums / self.count
        cov = self.gram / self.count - torch.outer(mean, mean)
        std = cov.diagonal().clamp_min(1e-30).sqrt()
        return (cov / torch.outer(std, std)).abs().clamp(max=1.0).numpy()

    def __enter__(self) -> HeadGates:
        self._handles = [layer.o_proj.register_forward_pre_hook(self._hook(layer)) for layer in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def tokenize_chunks(tokenizer, text: str, seq_len: int, max_sequences: int) -> list[torch.Tensor]:
    """Split a text into consecutive token sequences of ``seq_len`` (at most ``max_sequences``)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    chunks = [ids[i:i + seq_len] for i in range(0, len(ids) - 1, seq_len)]
    chunks = [c for c in chunks if len(c) >= 8][:max_sequences]
    if not chunks:
        raise ValueError(f"text too short: {len(ids)} tokens give no sequence of at least 8 tokens")
    return [torch.tensor([c]) for c in chunks]


def score_heads(model, layers: list[AttentionLayer], sequences: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Importance (layers, heads) and |correlation| (heads_total, heads_total) on calibration sequences."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    importance = torch.zeros(len(layers), layers[0].num_heads, dtype=torch.float64)
    with HeadGates(layers, requires_grad=True) as gates, Progress(transient=True) as progress:
        task = progress.add_task("scoring heads", total=len(sequences))
        gates.capture = True
        for ids in sequences:
            out = model(input_ids=ids, labels=ids, use_cache=False)
            out.loss.backward()
            importance += gates.gates.grad.detach().abs().double()
            gates.gates.grad = None
            gates.flush_capture()
            progress.advance(task)
        redundancy = gates.correlation()
    return (importance / len(sequences)).numpy(), redundancy


@torch.no_grad()
def ablation_importance(model, layers: list[AttentionLayer], sequences: list[torch.Tensor]) -> np.ndarray:
    """Mean loss increase (layers, heads) when each head alone is switched off."""
    model.eval()
    heads = layers[0].num_heads
    delta = np.zeros((len(layers), heads))
    with HeadGates(layers) as gates, Progress(transient=True) as progress:
        task = progress.add_task("ablating heads", total=len(sequences) * len(layers) * heads)
        for ids in sequences:
            base = float(model(input_ids=ids, labels=ids, use_cache=False).loss)
            for layer in range(len(layers)):
                for h in range(heads):
                    gates.gates[layer, h] = 0.0
                    delta[layer, h] += float(model(input_ids=ids, labels=ids, use_cache=False).loss) - base
                    gates.gates[layer, h] = 1.0
                    progress.advance(task)
    return delta / len(sequences)


@torch.no_grad()
def perplexity(model, layers: list[AttentionLayer], sequences: list[torch.Tensor],
               mask: np.ndarray | None = None) -> float:
    """Token-level perplexity with heads switched off where ``mask`` (layers, heads) is 0."""
    model.eval()
    total_nll, total_tokens = 0.0, 0
    with HeadGates(layers) as gates:
        if mask is not None:
            gates.gates.copy_(torch.as_tensor(mask, dtype=torch.float32))
        for ids in sequences:
            out = model(input_ids=ids, labels=ids, use_cache=False)
            n = ids.shape[1] - 1
            total_nll += float(out.loss) * n
            total_tokens += n
    return math.exp(total_nll / total_tokens)


@torch.no_grad()
def zero_pruned_heads(layers: list[AttentionLayer], mask: np.ndarray) -> int:
    """Write a mask into the weights: zero ``o_proj`` columns of heads whose mask is 0; returns how many."""
    pruned = 0
    for layer in layers:
        for h in range(layer.num_heads):
            if mask[layer.index, h] == 0:
                layer.o_proj.weight[:, h * layer.head_dim:(h + 1) * layer.head_dim] = 0
                pruned += 1
    return pruned
