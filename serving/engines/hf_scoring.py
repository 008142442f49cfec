"""The transformers cross-encoder engine: (query, document) pairs in, one relevance score per pair out.

``AutoModelForSequenceClassification`` with one output label (BERT-style rerankers, or a decoder with a
classification head such as ``Qwen2ForSequenceClassification``); the score is that logit through the activation
the checkpoint declares for sentence-transformers, sigmoid by default, as ``CrossEncoder`` does for 1-label
models. Batches run on a worker thread, one at a time, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import torch

from serving.engines.base import EngineError, GenerationDelta, PairPrompt, SamplingSettings, context_length_message
from serving.engines.hf_pooling import length_batches, right_padded
from serving.engines.settings import EngineSettings, as_settings
from serving.engines.tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

IDENTITY = "torch.nn.modules.linear.Identity"
"""sentence-transformers' name for "no activation" (``config.sentence_transformers.activation_fn``)."""


def declared_activation(config: Any) -> str:
    """"identity" when the checkpoint says its scores are raw logits (in sentence-transformers' current or older
    key, both of which vLLM reads too), else "sigmoid"."""
    declared = ((getattr(config, "sentence_transformers", None) or {}).get("activation_fn")
                or getattr(config, "sbert_ce_default_activation_function", None))
    return "identity" if declared == IDENTITY else "sigmoid"


class HFScoringEngine:
    """Cross-encoder reranking with ``AutoModelForSequenceClassification``."""

    name = "hf"
    runner = "score"

    def __init__(self, model_path: str, model: Any, tokenizer: Any, max_model_len: int, device: torch.device,
                 activation: str) -> None:
        self.model_path = model_path
        self.model = model
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.device = device
        self.activation = activation
        self._lock = threading.Lock()
        self._running = 0

    @classmethod
    async def create(cls, settings: EngineSettings | str, **overrides: Any) -> HFScoringEngine:
        """Load the sequence classifier; EngineError unless it has exactly one output label."""
        return await asyncio.to_thread(cls._load, as_settings(settings, "hf", {"runner": "score", **overrides}))

    @classmethod
    def _load(cls, settings: EngineSettings) -> HFScoringEngine:
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = AutoConfig.from_pretrained(settings.model, trust_remote_code=settings.trust_remote_code)
        if getattr(config, "num_labels", 1) != 1:
            raise EngineError(f"{settings.model} has {config.num_labels} output labels: a reranker needs one "
                              "(a relevance logit)")
        target = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tokenizer = load_tokenizer(settings)
        model = AutoModelForSequenceClassification.from_pretrained(
            settings.model, trust_remote_code=settings.trust_remote_code,
            dtype=torch.float32 if settings.dtype == "auto" else settings.dtype)
        if model.config.pad_token_id is None:  # decoders find each row's last token by it
            model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
                else tokenizer.eos_token_id
        model.to(target).eval()
        context = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 512
        max_model_len = min(settings.max_model_len or context, context)
        activation = declared_activation(model.config)
        logger.info("hf scoring engine: %s (%s, max_model_len %d)", settings.model, activation, max_model_len)
        return cls(settings.model, model, tokenizer, max_model_len, target, activation)

    def lora_names(self) -> list[str]:
        """Scoring engines serve no adapters."""
        return []

    def num_unfinished_requests(self) -> int:
        """Scoring requests in flight."""
        return self._running

    async def score(self, pairs: list[PairPrompt], request_id: str) -> list[float]:
        """One relevance score per (query, document) pair."""
        for pair in pairs:
            if len(pair.token_ids) > self.max_model_len:
                raise EngineError(context_length_message(len(pair.token_ids), 0, self.max_model_len))
        self._running += 1
        try:
            return await asyncio.to_thread(self._score_all, pairs)
        finally:
            self._running -= 1

    def _score_all(self, pairs: list[PairPrompt]) -> list[float]:
        out = [0.0] * len(pairs)
        pad = self.model.config.pad_token_id
        with self._lock, torch.inference_mode():
            for indices in length_batches([len(pair.token_ids) for pair in pairs]):
                ids, mask = right_padded([pairs[i].token_ids for i in indices], pad)
                inputs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
                if pairs[indices[0]].token_type_ids is not None:
                    inputs["token_type_ids"] = right_padded([pairs[i].token_type_ids or [] for i in indices],
                                                            0)[0].to(self.device)
                logits = self.model(**inputs).logits[:, 0].float()
                scores = torch.sigmoid(logits) if self.activation == "sigmoid" else logits
                for row, index in enumerate(indices):
                    out[index] = float(scores[row])
        return out

    async def pool(self, prompts: list[list[int]], request_id: str) -> list[list[float]]:
        """A reranker gives no embeddings."""
        raise EngineError(f"{self.model_path} is a reranker: it cannot produce embeddings")

    async def generate(self, prompt_ids: list[int], params: SamplingSettings, request_id: str,
                       lora_name: str | None = None) -> Any:
        """A reranker does not generate."""
        raise EngineError(f"{self.model_path} is a reranker: it cannot generate text")
        yield GenerationDelta([], "")  # pragma: no cover  (makes this an async generator)

    async def abort(self, request_id: str) -> None:
        """Scoring requests finish as one batch; nothing to abort."""

    async def shutdown(self) -> None:
        """Release the model."""
        self.model = None
