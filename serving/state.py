"""What the routes share: settings, the engine, the served names and the metrics."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from serving.config import ServerSettings
from serving.engines.base import Engine
from serving.errors import model_not_found, wrong_model_type
from serving.metrics import ServerMetrics
from serving.protocol import Model, ModelList


@dataclass
class ServerState:
    """One server's engine and the names it answers to."""

    settings: ServerSettings
    engine: Engine
    served_model_name: str
    metrics: ServerMetrics
    embedder: Engine | None = None
    """An embedding model served beside the chat model (``--embedding-model``)."""
    embedding_name: str | None = None
    parsers: Any = None
    """vLLM's tool-call and reasoning parsers (``serving.engines.vllm_parsers.OutputParsers``), when installed."""

    @property
    def tokenizer(self) -> Any:
        """The engine's tokenizer."""
        return self.engine.tokenizer

    def resolve_model(self, name: str | None) -> str | None:
        """The LoRA adapter a request's ``model`` selects (None for the base model); 404 if unknown, 400 for an
        embedding model."""
        if name is not None and self.embedder is not None and name == self.embedding_name:
            raise wrong_model_type(name, "an embedding model", "/v1/embeddings")
        if name is None or name in (self.served_model_name, self.engine.model_path):
            if self.engine.runner == "pool":
                raise wrong_model_type(name or self.served_model_name, "an embedding model", "/v1/embeddings")
            return None
        if name in self.engine.lora_names():
            return name
        raise model_not_found(name)

    def resolve_embedder(self, name: str | None) -> Engine:
        """The pooling engine a request's ``model`` names; 404 if unknown, 400 for a text generation model."""
        if self.embedder is not None and name in (None, self.embedding_name, self.embedder.model_path):
            return self.embedder
        if name is None or name in (self.served_model_name, self.engine.model_path, *self.engine.lora_names()):
            if self.engine.runner == "pool":
                return self.engine
            raise wrong_model_type(name or self.served_model_name, "a text generation model",
                                   "/v1/chat/completions or /v1/responses")
        raise model_not_found(name)

    def model_list(self) -> ModelList:
        """The base model and every LoRA adapter, as ``/v1/models`` lists them."""
        base = self.served_model_name
        data = [Model(id=base, root=self.engine.model_path, max_model_len=self.engine.max_model_len)]
        data += [Model(id=name, root=self.settings.lora.get(name), parent=base,
                       max_model_len=self.engine.max_model_len) for name in self.engine.lora_names()]
        if self.embedder is not None and self.embedding_name is not None:
            data.append(Model(id=self.embedding_name, root=self.embedder.model_path,
                              max_model_len=self.embedder.max_model_len))
        return ModelList(data=data)

    def token_text(self, token_id: int) -> str:
        """The text of one token (for logprobs)."""
        return _decode_one(self.tokenizer, token_id)


@lru_cache(maxsize=262_144)
def _decode_cached(tokenizer_id: int, tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id])


def _decode_one(tokenizer: Any, token_id: int) -> str:
    return _decode_cached(id(tokenizer), tokenizer, token_id)
