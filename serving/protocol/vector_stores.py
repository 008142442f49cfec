"""Vector stores (``/v1/vector_stores``), in the shapes of OpenAI's API reference: stores, their files, file
batches and search, with attribute filters (comparison and compound) and chunking strategies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from serving.protocol.common import RequestModel, ResponseModel

AttributeValue = Annotated[str, Field(max_length=512)] | float | bool
Attributes = Annotated[dict[Annotated[str, Field(max_length=64)], AttributeValue], Field(max_length=16)]


# ------------------------------------------------------------------------------------------ chunking


class StaticChunking(RequestModel):
    max_chunk_size_tokens: int = Field(ge=100, le=4096)
    chunk_overlap_tokens: int = Field(ge=0)

    @model_validator(mode="after")
    def _overlap(self) -> StaticChunking:
        if self.chunk_overlap_tokens > self.max_chunk_size_tokens // 2:
            raise ValueError("chunk_overlap_tokens must not exceed half of max_chunk_size_tokens")
        return self


class AutoChunkingStrategy(RequestModel):
    type: Literal["auto"]


class StaticChunkingStrategy(RequestModel):
    type: Literal["static"]
    static: StaticChunking


ChunkingStrategy = Annotated[AutoChunkingStrategy | StaticChunkingStrategy, Field(discriminator="type")]


class ExpiresAfter(RequestModel):
    anchor: Literal["last_active_at"]
    days: int = Field(ge=1, le=365)


# -------------------------------------------------------------------------------------------- filters


class ComparisonFilter(RequestModel):
    key: str
    type: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
    value: str | float | bool | list[str | float]


class CompoundFilter(RequestModel):
    type: Literal["and", "or"]
    filters: list[ComparisonFilter | CompoundFilter] = Field(min_length=1)


Filter = ComparisonFilter | CompoundFilter


# ------------------------------------------------------------------------------------------- requests


class CreateVectorStoreRequest(RequestModel):
    file_ids: list[str] | None = Field(None, max_length=500)
    name: str | None = Field(None, max_length=512)
    description: str | None = Field(None, max_length=512)
    expires_after: ExpiresAfter | None = None
    chunking_strategy: ChunkingStrategy | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)


class ModifyVectorStoreRequest(RequestModel):
    name: str | None = Field(None, max_length=512)
    expires_after: ExpiresAfter | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)


class CreateVectorStoreFileRequest(RequestModel):
    file_id: str
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class UpdateVectorStoreFileRequest(RequestModel):
    attributes: Attributes | None


class BatchFile(RequestModel):
    file_id: str
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class CreateFileBatchRequest(RequestModel):
    file_ids: list[str] | None = Field(None, max_length=500)
    files: list[BatchFile] | None = Field(None, max_length=500)
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None

    @model_validator(mode="after")
    def _one_list(self) -> CreateFileBatchRequest:
        if bool(self.file_ids) == bool(self.files):
            raise ValueError("give either file_ids or files")
        return self


class HybridSearch(RequestModel):
    """Weights of reciprocal-rank fusion: dense (embedding) matches against keyword (BM25) matches."""

    embedding_weight: float = Field(ge=0.0)
    text_weight: float = Field(ge=0.0)

    @model_validator(mode="after")
    def _some_weight(self) -> HybridSearch:
        if self.embedding_weight == 0 and self.text_weight == 0:
            raise ValueError("embedding_weight and text_weight cannot both be 0")
        return self


class RankingOptions(RequestModel):
    ranker: Literal["auto", "default-2024-11-15", "none"] | None = None
    score_threshold: float | None = Field(None, ge=0.0, le=1.0)
    hybrid_search: HybridSearch | None = None


class SearchRequest(RequestModel):
    query: str | list[str]
    filters: Filter | None = None
    max_num_results: int = Field(10, ge=1, le=50)
    ranking_options: RankingOptions | None = None
    rewrite_query: bool | None = None
    """Accepted; the query is searched as given."""

    @model_validator(mode="after")
    def _query(self) -> SearchRequest:
        queries = [self.query] if isinstance(self.query, str) else self.query
        if not queries or not any(q.strip() for q in queries):
            raise ValueError("query must not be empty")
        return self


# ------------------------------------------------------------------------------------------ responses


class FileCounts(ResponseModel):
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0


class VectorStore(ResponseModel):
    id: str
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: str | None = None
    description: str | None = None
    usage_bytes: int = 0
    file_counts: FileCounts
    status: Literal["expired", "in_progress", "completed"]
    expires_after: dict[str, Any] | None = None
    expires_at: int | None = None
    last_active_at: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class VectorStoreList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[Any]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class VectorStoreDeleted(ResponseModel):
    id: str
    object: Literal["vector_store.deleted"] = "vector_store.deleted"
    deleted: bool = True


class LastError(ResponseModel):
    code: Literal["server_error", "unsupported_file", "invalid_file", "rate_limit_exceeded"]
    message: str


class VectorStoreFile(ResponseModel):
    id: str
    object: Literal["vector_store.file"] = "vector_store.file"
    created_at: int
    vector_store_id: str
    usage_bytes: int = 0
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    last_error: LastError | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    chunking_strategy: dict[str, Any]


class VectorStoreFileDeleted(ResponseModel):
    id: str
    object: Literal["vector_store.file.deleted"] = "vector_store.file.deleted"
    deleted: bool = True


class FileBatch(ResponseModel):
    id: str
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    file_counts: FileCounts


class TextContent(ResponseModel):
    type: Literal["text"] = "text"
    text: str


class SearchResult(ResponseModel):
    file_id: str
    filename: str
    score: float
    attributes: dict[str, Any] = Field(default_factory=dict)
    content: list[TextContent]


class SearchResultsPage(ResponseModel):
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[SearchResult]
    has_more: bool = False
    next_page: str | None = None


class FileContentPage(ResponseModel):
    """``GET /v1/vector_stores/{id}/files/{file_id}/content``: the file's chunks."""

    object: Literal["vector_store.file_content.page"] = "vector_store.file_content.page"
    data: list[TextContent]
    has_more: bool = False
    next_page: str | None = None
