"""Embedding and rerank routes: thin. Pick the handler, return JSON."""

from __future__ import annotations

from fastapi import APIRouter

from serving.handlers.embeddings import create_embeddings, create_rerank
from serving.protocol.embeddings import EmbeddingRequest, EmbeddingResponse, RerankRequest, RerankResponse
from serving.routes.openai import StateDep, UsageDep

router = APIRouter()

@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def embeddings(body: EmbeddingRequest, state: StateDep, usage: UsageDep) -> EmbeddingResponse:
    """Embed strings or token ids (float or base64, Matryoshka ``dimensions`` where the model has them)."""
    return await create_embeddings(state, body, usage)


@router.post("/v1/rerank", response_model=RerankResponse)
@router.post("/v2/rerank", response_model=RerankResponse, include_in_schema=False)
@router.post("/rerank", response_model=RerankResponse, include_in_schema=False)
async def rerank(body: RerankRequest, state: StateDep, usage: UsageDep) -> RerankResponse:
    """Documents ordered by relevance to a query (the vLLM / Jina / Cohere shape)."""
    return await create_rerank(state, body, usage)
