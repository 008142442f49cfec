"""What the routes share: settings, the engine, the served names and the metrics."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from serving.config import ServerSettings
from serving.engines.base import Engine, Scorer
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
    reranker: Engine | None = None
    """A cross-encoder served beside the chat model (``--rerank-model``), a ``Scorer``."""
    rerank_name: str | None = None

    @property
    def tokenizer(self) -> Any:
        """The engine's tokenizer."""
        return self.engine.tokenizer

    def resolve_model(self, name: str | None) -> str | None:
        """The LoRA adapter a request's ``model`` selects (None for the base model); 404 if unknown, 400 for an
        embedding model or a reranker."""
        for side, side_name in ((self.embedder, self.embedding_name), (self.reranker, self.rerank_name)):
            if name is not None and side is not None and name == side_name:
                raise _wrong_type(name, side)
        if name is None or name in (self.served_model_name, self.engine.model_path):
            if self.engine.runner != "generate":
                raise _wrong_type(name or self.served_model_name, self.engine)
            return None
        if name in self.engine.lora_names():
            return name
        raise model_not_found(name)

    def resolve_embedder(self, name: str | None) -> Engine:
        """The pooling engine a request's ``model`` names; 404 if unknown, 400 for a text generation model or a
        reranker."""
        if self.embedder is not None and name in (None, self.embedding_name, self.embedder.model_path):
            return self.embedder
        if self.reranker is not None and name in (self.rerank_name, self.reranker.model_path):
            raise _wrong_type(name or "", self.reranker)
        if name is None or name in (self.served_model_name, self.engine.model_path, *self.engine.lora_names()):
            if self.engine.runner == "pool":
                return self.engine
            raise _wrong_type(name or self.served_model_name, self.engine)
        raise model_not_found(name)

    def resolve_reranker(self, name: str) -> Scorer | None:
        """The cross-encoder a rerank request's ``model`` names, or None (then it names an embedding model, whose
        cosine ranks the documents)."""
        if self.reranker is not None and name in (self.rerank_name, self.reranker.model_path):
            return self.reranker  # type: ignore[return-value]
        if self.engine.runner == "score" and name in (self.served_model_name, self.engine.model_path):
            return self.engine  # type: ignore[return-value]
        return None

    def model_list(self) -> ModelList:
        """The base model, every LoRA adapter, the embedding model and the reranker, as ``/v1/models`` lists
        them."""
        base = self.served_model_name
        data = [Model(id=base, root=self.engine.model_path, max_model_len=self.engine.max_model_len)]
        data += [Model(id=name, root=self.settings.lora.get(name), parent=base,
                       max_model_len=self.engine.max_model_len) for name in self.engine.lora_names()]
        for side, side_name in ((self.embedder, self.embedding_name), (self.reranker, self.rerank_name)):
            if side is not None and side_name is not None:
                data.append(Model(id=side_name, root=side.model_path, max_model_len=side.max_model_len))
        return ModelList(data=data)

    def token_text(self, token_id: int) -> str:
        """The text of one token (for logprobs)."""
        return _decode_one(self.tokenizer, token_id)


KINDS = {
    "generate": ("a text generation model", "/v1/chat/completions or /v1/responses"),
    "pool": ("an embedding model", "/v1/embeddings"),
    "score": ("a reranker", "/v1/rerank"),
}


def _wrong_type(name: str, engine: Engine) -> Exception:
    """The 400 for a request that names ``engine``'s model on a route for another kind of model."""
    kind, route = KINDS[engine.runner]
    return wrong_model_type(name, kind, route)


@lru_cache(maxsize=262_144)
def _decode_cached(tokenizer_id: int, tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id])


def _decode_one(tokenizer: Any, token_id: int) -> str:
    return _decode_cached(id(tokenizer), tokenizer, token_id)
