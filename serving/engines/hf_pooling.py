"""The transformers pooling engine: token ids in, one embedding per input out.

The model folder's sentence-transformers configuration (``modules.json`` + ``1_Pooling``) says how token
vectors become one vector (mean, last token or CLS) and whether it is normalised; without one, mean pooling
with normalisation is used. Batches run on a worker thread, one at a time, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import torch

from serving.engines.base import EngineError, GenerationDelta, SamplingSettings, context_length_message
from serving.engines.settings import EngineSettings, as_settings
from serving.engines.tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

BATCH_TOKENS = 16_384
"""Most padded tokens one forward pass holds (inputs are sorted by length and packed up to this)."""


def length_batches(lengths: list[int], budget: int = BATCH_TOKENS) -> Iterator[list[int]]:
    """Indices of the inputs, shortest first, packed into batches of at most ``budget`` padded tokens."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and lengths[order[end]] * (end - start + 1) <= budget:
            end += 1
        yield order[start:end]
        start = end


def right_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows as one right-padded tensor of ids, and its attention mask."""
    width = max(len(seq) for seq in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, seq in enumerate(rows):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids, mask


class HFPoolingEngine:
    """Embeddings with ``AutoModel`` and the checkpoint's own pooling configuration."""

    name = "hf"
    runner = "pool"

    def __init__(self, model_path: str, model: Any, tokenizer: Any, spec: Any, max_model_len: int,
                 device: torch.device) -> None:
        self.model_path = model_path
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.max_model_len = max_model_len
        self.device = device
        self.dimensions = int(spec.dimension)
        self.matryoshka_dimensions = list(spec.matryoshka_dimensions)
        self._lock = threading.Lock()
        self._running = 0

    @classmethod
    async def create(cls, settings: EngineSettings | str, **overrides: Any) -> HFPoolingEngine:
        """Load the model and its pooling configuration."""
        return await asyncio.to_thread(cls._load, as_settings(settings, "hf", {"runner": "pool", **overrides}))

    @classmethod
    def _load(cls, settings: EngineSettings) -> HFPoolingEngine:
        from transformers import AutoModel

        from training.embed_pooling import PoolingSpec, read_pooling_spec

        target = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tokenizer = load_tokenizer(settings)
        model = AutoModel.from_pretrained(settings.model, trust_remote_code=settings.trust_remote_code,
                                          dtype=torch.float32 if settings.dtype == "auto" else settings.dtype)
        model.to(target).eval()
        try:
            spec = read_pooling_spec(settings.model) or PoolingSpec()
        except (ValueError, OSError) as err:
            raise EngineError(str(err)) from None
        spec.dimension = spec.dimension or int(model.config.get_text_config().hidden_size)
        context = getattr(model.config.get_text_config(), "max_position_embeddings", None) or spec.max_length
        max_model_len = min(settings.max_model_len or context, context)
        logger.info("hf pooling engine: %s (%s pooling, normalize=%s, %d dims, max_model_len %d)", settings.model,
                    spec.pooling, spec.normalize, spec.dimension, max_model_len)
        return cls(settings.model, model, tokenizer, spec, max_model_len, target)

    def lora_names(self) -> list[str]:
        """Pooling engines serve no adapters."""
        return []

    def num_unfinished_requests(self) -> int:
        """Pooling requests in flight."""
        return self._running

    async def pool(self, prompts: list[list[int]], request_id: str) -> list[list[float]]:
        """One embedding per prompt (token ids), pooled and normalised as the model declares."""
        for ids in prompts:
            if not ids:
                raise EngineError("an input is empty")
            if len(ids) > self.max_model_len:
                raise EngineError(context_length_message(len(ids), 0, self.max_model_len))
        self._running += 1
        try:
            return await asyncio.to_thread(self._pool_all, prompts)
        finally:
            self._running -= 1

    def _pool_all(self, prompts: list[list[int]]) -> list[list[float]]:
        from training.embed_pooling import pool

        out: list[list[float] | None] = [None] * len(prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        with self._lock, torch.inference_mode():
            for indices in length_batches([len(ids) for ids in prompts]):
                ids, mask = right_padded([prompts[i] for i in indices], pad)
                mask = mask.to(self.device)
                hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask).last_hidden_state
                vectors = pool(hidden.float(), mask, self.spec.pooling)
                if self.spec.normalize:
                    vectors = torch.nn.functional.normalize(vectors, dim=-1)
                for row, index in enumerate(indices):
                    out[index] = vectors[row].cpu().tolist()
        return out  # type: ignore[return-value]

    async def generate(self, prompt_ids: list[int], params: SamplingSettings, request_id: str,
                       lora_name: str | None = None) -> Any:
        """An embedding model does not generate."""
        raise EngineError(f"{self.model_path} is an embedding model: it cannot generate text")
        yield GenerationDelta([], "")  # pragma: no cover  (makes this an async generator)

    async def abort(self, request_id: str) -> None:
        """Pooling requests finish as one batch; nothing to abort."""

    async def shutdown(self) -> None:
        """Release the model."""
        self.model = None
