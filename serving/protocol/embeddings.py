"""Embeddings (``POST /v1/embeddings``, as OpenAI's reference) and reranking (``POST /v1/rerank``, the shape that
vLLM, Jina and Cohere share)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from serving.protocol.common import RequestModel, ResponseModel

MAX_INPUTS = 2048

TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
EmbeddingInput = (
    str
    | Annotated[list[str], Field(min_length=1, max_length=MAX_INPUTS)]
    | TokenIds
    | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_INPUTS)]
)


class EmbeddingRequest(RequestModel):
    input: EmbeddingInput
    model: str
    dimensions: int | None = Field(None, ge=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    # --- Nexus-K extensions (as in vLLM): send through the client's `extra_body`
    truncate_prompt_tokens: int | None = Field(None, ge=1)
    """Keep only the last this many tokens of each input instead of refusing a longer one."""

    @field_validator("input")
    @classmethod
    def _no_empty_text(cls, value: EmbeddingInput) -> EmbeddingInput:
        texts = [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]
        if any(not t for t in texts):
            raise ValueError("input must not contain empty strings")
        return value


class Embedding(ResponseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class EmbeddingUsage(ResponseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(ResponseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# ------------------------------------------------------------------------ rerank (vLLM / Jina / Cohere)


class RerankDocumentText(RequestModel):
    text: str


class RerankRequest(RequestModel):
    model: str
    query: str = Field(min_length=1)
    documents: list[str | RerankDocumentText] = Field(min_length=1, max_length=MAX_INPUTS)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = True

    def texts(self) -> list[str]:
        """The documents as plain strings."""
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankDocument(ResponseModel):
    text: str


class RerankResult(ResponseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankUsage(ResponseModel):
    total_tokens: int


class RerankResponse(ResponseModel):
    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult]
