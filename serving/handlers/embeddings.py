"""``POST /v1/embeddings`` and ``POST /v1/rerank``: inputs to token ids, the pooling engine, vectors back; a
rerank naming a served cross-encoder scores each (query, document) pair with it instead."""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

from serving.engines.base import Engine, PairPrompt, Scorer
from serving.errors import APIError
from serving.protocol.common import random_id
from serving.protocol.embeddings import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
)
from serving.sampling import check_token_ids
from serving.security.pii_guard import guard_completion_prompt, guard_prompt_texts
from serving.state import ServerState
from serving.usage import UsageRecord


def _token_lists(engine: Engine, request: EmbeddingRequest) -> tuple[list[list[int]], list[str] | None]:
    """Token ids of every input (and the texts, when the input was text)."""
    value = request.input
    if isinstance(value, str):
        value = [value]
    if isinstance(value[0], int):
        value = [value]  # one list of token ids
    if isinstance(value[0], str):
        texts = list(value)
        return [list(ids) for ids in engine.tokenizer(texts).input_ids], texts
    vocab = len(engine.tokenizer)
    for ids in value:
        check_token_ids(ids, vocab, "input")
    return [list(ids) for ids in value], None


def _guarded_input(value: Any, usage: UsageRecord, engine: Engine) -> Any:
    """The input after the organisation's PII guard; token-id inputs that held personal data come back as text
    (then every input does, so that the list keeps one type)."""
    if usage.pii_guard == "off":
        return value
    guarded = guard_completion_prompt(value, usage, engine.tokenizer.decode)
    if isinstance(guarded, list) and any(isinstance(item, str) for item in guarded):
        guarded = [item if isinstance(item, str) else engine.tokenizer.decode(item) for item in guarded]
    return guarded


def _fit(prompts: list[list[int]], limit: int, truncate: int | None, param: str = "input") -> list[list[int]]:
    """Inputs within the model's context: cut to their last ``truncate`` tokens when asked, else a 400."""
    if truncate is not None:
        keep = min(truncate, limit)
        return [ids[-keep:] for ids in prompts]
    for index, ids in enumerate(prompts):
        if len(ids) > limit:
            hint = "shorten it" if param != "input" else "shorten it or send truncate_prompt_tokens"
            raise APIError(f"{param}[{index}] has {len(ids)} tokens, more than this model's limit of {limit}; "
                           + hint, param=param, code="context_length_exceeded")
    return prompts


def _resize(vectors: list[list[float]], dimensions: int | None, engine: Engine) -> np.ndarray:
    """The vectors as float32, cut to ``dimensions`` (Matryoshka) and scaled back to unit length."""
    array = np.asarray(vectors, dtype=np.float32)
    if dimensions is None or dimensions == array.shape[1]:
        return array
    allowed = list(getattr(engine, "matryoshka_dimensions", []) or [])
    if dimensions not in allowed or dimensions > array.shape[1]:
        sizes = f"one of {sorted(allowed)}" if allowed else f"only its full size, {array.shape[1]}"
        raise APIError(f"dimensions={dimensions} is not supported by this model: it offers {sizes}",
                       param="dimensions")
    array = array[:, :dimensions]
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


async def _charge(prompts: list[list[int]], usage: UsageRecord) -> None:
    tokens = sum(len(ids) for ids in prompts)
    await usage.reserve(tokens)
    usage.prompt_tokens += tokens


async def _pool(engine: Engine, prompts: list[list[int]], usage: UsageRecord, prefix: str) -> list[list[float]]:
    await _charge(prompts, usage)
    return await engine.pool(prompts, random_id(prefix))


async def create_embeddings(state: ServerState, request: EmbeddingRequest, usage: UsageRecord) -> EmbeddingResponse:
    """Embed every input; usage counts their tokens."""
    engine = state.resolve_embedder(request.model)
    usage.start("embeddings", request.model, None, request.user)
    request.input = _guarded_input(request.input, usage, engine)
    prompts, texts = _token_lists(engine, request)
    if texts is not None:
        usage.set_prompt(lambda: "\n".join(texts))
    prompts = _fit(prompts, engine.max_model_len, request.truncate_prompt_tokens)
    vectors = _resize(await _pool(engine, prompts, usage, "embd"), request.dimensions, engine)
    data = [Embedding(embedding=_encode(v, request.encoding_format), index=i) for i, v in enumerate(vectors)]
    tokens = usage.prompt_tokens
    return EmbeddingResponse(data=data, model=request.model, usage=EmbeddingUsage(prompt_tokens=tokens,
                                                                                    total_tokens=tokens))


async def _cosine_scores(engine: Engine, query: str, texts: list[str], usage: UsageRecord) -> list[float]:
    """Cosine similarity of each document's embedding to the query's."""
    prompts = _fit([list(ids) for ids in engine.tokenizer([query, *texts]).input_ids],
                   engine.max_model_len, None)
    vectors = np.asarray(await _pool(engine, prompts, usage, "rerank"), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return [float(score) for score in vectors[1:] @ vectors[0]]


async def cross_encoder_scores(scorer: Scorer, query: str, texts: list[str], usage: UsageRecord,
                               truncate: bool = False) -> list[float]:
    """The cross-encoder's relevance score of each (query, document) pair, tokenised as one pair input;
    ``truncate``: documents cut to fit the model's context (else a pair too long is a 400)."""
    cut = {"truncation": "only_second", "max_length": scorer.max_model_len} if truncate else {}
    encoded = scorer.tokenizer([query] * len(texts), texts, **cut)
    ids = _fit([list(seq) for seq in encoded["input_ids"]], scorer.max_model_len, None, "documents")
    types = encoded.get("token_type_ids")
    pairs = [PairPrompt(seq, list(types[i]) if types is not None else None) for i, seq in enumerate(ids)]
    await _charge(ids, usage)
    return await scorer.score(pairs, random_id("rerank"))


async def create_rerank(state: ServerState, request: RerankRequest, usage: UsageRecord) -> RerankResponse:
    """Order the documents by relevance to the query: the named cross-encoder's scores, or the cosine
    similarity of the named embedding model's vectors."""
    scorer = state.resolve_reranker(request.model)
    engine = scorer or state.resolve_embedder(request.model)
    usage.start("rerank", request.model, None)
    query, *texts = guard_prompt_texts([request.query, *request.texts()], usage, "documents")
    usage.set_prompt(lambda: "\n".join([query, *texts]))
    if scorer is not None:
        scores = await cross_encoder_scores(scorer, query, texts, usage)
    else:
        scores = await _cosine_scores(engine, query, texts, usage)
    order = sorted(range(len(texts)), key=lambda i: -scores[i])[: request.top_n or len(texts)]
    results = [RerankResult(index=i, relevance_score=round(scores[i], 6) if math.isfinite(scores[i]) else 0.0,
                            document=RerankDocument(text=texts[i]) if request.return_documents else None)
               for i in order]
    return RerankResponse(id=random_id("rerank"), model=request.model, results=results,
                          usage=RerankUsage(total_tokens=usage.prompt_tokens))
