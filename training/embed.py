"""Sentence embeddings from any transformers checkpoint: the pooled model, the contrastive loss, and an
``Embedder`` that loads a folder written by ``nexus-k train embed`` (or any sentence-transformers folder)
and encodes texts to numpy vectors."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nexus_k.core.errors import UserError
from training.embed_pooling import PoolingSpec, pool, read_pooling_spec

log = logging.getLogger(__name__)


class EmbeddingModel(nn.Module):
    """A transformer body (``AutoModel``, possibly with LoRA) followed by pooling and optional normalisation."""

    def __init__(self, body: nn.Module, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.body, self.pooling, self.normalize = body, pooling, normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, width) float32 embeddings."""
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        vectors = pool(hidden, attention_mask, self.pooling).float()
        return F.normalize(vectors, dim=-1) if self.normalize else vectors


def info_nce_loss(
    queries: torch.Tensor,
    documents: torch.Tensor,
    temperature: float,
    false_negatives: torch.Tensor | None = None,
    dims: list[int] | None = None,
) -> torch.Tensor:
    """InfoNCE: query ``i`` must pick document ``i`` among all documents (the batch's positives, then the
    hard negatives). ``false_negatives`` (queries x documents, bool) masks columns that are also right
    answers. With ``dims``, the mean loss over those prefix lengths (Matryoshka); else the full width."""
    targets = torch.arange(queries.shape[0], device=queries.device)
    losses = []
    for dim in dims or [queries.shape[1]]:
        q, d = F.normalize(queries[:, :dim], dim=-1), F.normalize(documents[:, :dim], dim=-1)
        logits = q @ d.T / temperature
        if false_negatives is not None:
            logits = logits.masked_fill(false_negatives, float("-inf"))
        losses.append(F.cross_entropy(logits, targets))
    return torch.stack(losses).mean()


def cosent_loss(
    first: torch.Tensor, second: torch.Tensor, scores: torch.Tensor, scale: float, dims: list[int] | None = None
) -> torch.Tensor:
    """CoSENT: for every two pairs of the batch whose gold ``scores`` differ, the cosine of the higher-scored
    pair must exceed the other's: ``log(1 + sum exp(scale * (cos_low - cos_high)))``. It trains the order of
    similarities (what Spearman measures), not their values. With ``dims``, the mean over those prefix lengths."""
    losses = []
    higher = scores[:, None] > scores[None, :]
    for dim in dims or [first.shape[1]]:
        cos = (F.normalize(first[:, :dim], dim=-1) * F.normalize(second[:, :dim], dim=-1)).sum(-1)
        margins = (scale * (cos[None, :] - cos[:, None]))[higher]
        losses.append(torch.logsumexp(torch.cat([margins.new_zeros(1), margins]), dim=0))
    return torch.stack(losses).mean()


def autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CPU/GPU, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type="cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_body(name_or_path: str) -> nn.Module:
    """``AutoModel.from_pretrained`` in float32 (a LoRA adapter folder loads its base, then the adapter)."""
    from transformers import AutoModel

    if not Path(name_or_path).expanduser().exists() and name_or_path.startswith((".", "/", "~")):
        raise UserError(f"model folder not found: {name_or_path}")
    try:
        return AutoModel.from_pretrained(name_or_path, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a model from {name_or_path!r}: {str(err).splitlines()[0]}") from err


def load_embed_tokenizer(name_or_path: str) -> Any:
    """The tokenizer, right-padded, with a pad token (the EOS when the model has none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a tokenizer from {name_or_path!r}: {str(err).splitlines()[0]}") from err
    tokenizer.padding_side = "right"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _tokenizer_source(name_or_path: str) -> str:
    """The folder itself, or for a LoRA adapter folder shipped without tokenizer files, its base."""
    folder = Path(name_or_path)
    adapter = folder / "adapter_config.json"
    has_tokenizer = any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    if folder.is_dir() and adapter.is_file() and not has_tokenizer:
        return json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]
    return name_or_path


class Embedder:
    """Encode texts with a pooled model; ``Embedder.load(folder)`` reads the folder's pooling config."""

    def __init__(self, model: EmbeddingModel, tokenizer: Any, max_length: int, precision: str = "bf16") -> None:
        self.model, self.tokenizer, self.max_length, self.precision = model, tokenizer, max_length, precision

    @classmethod
    def load(
        cls, name_or_path: str, pooling: str | None = None, normalize: bool | None = None, max_length: int | None = None
    ) -> Embedder:
        """A model folder or hub name; its ``modules.json`` pooling wins unless ``pooling`` is given
        (a folder without one defaults to mean pooling, normalised)."""
        spec = read_pooling_spec(name_or_path) if Path(name_or_path).is_dir() else None
        spec = spec or PoolingSpec()
        body = load_body(name_or_path)
        model = EmbeddingModel(body, pooling or spec.pooling, spec.normalize if normalize is None else normalize)
        model.eval()
        return cls(model, load_embed_tokenizer(_tokenizer_source(name_or_path)), max_length or spec.max_length)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask``, truncated to ``max_length``."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(len(texts), width) float32 embeddings; texts are batched by length to waste little padding."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks = []
        for start in range(0, len(order), batch_size):
            batch = self.tokenize([texts[i] for i in order[start : start + batch_size]])
            device = next(self.model.parameters()).device
            with autocast(self.precision):
                chunks.append(self.model(**{k: v.to(device) for k, v in batch.items()}).float().cpu())
        self.model.train(was_training)
        vectors = torch.cat(chunks).numpy()
        out = np.empty_like(vectors)
        out[order] = vectors
        return out
