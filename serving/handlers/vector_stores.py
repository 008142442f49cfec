"""``/v1/vector_stores``: stores, their files and file batches, ingestion off the request path, and search.

Adding a file records it ``in_progress`` and starts an asyncio task (at most ``vector_store_ingest_concurrency``
run at once per process) that extracts the text in a child process with a time limit (``ingest_timeout_s``;
``serving.retrieval.ingest_process``), chunks it by
tokens of the embedding model's tokenizer (the chat model's when none is served), stores each chunk's Kiwi terms
and, when an embedding model is served, its vector; then ``completed``, or ``failed`` with ``last_error``.
Ingestion is not charged to the organisation's credits (search queries are). A file left ``in_progress`` by a
server that stopped is ingested again when a server starts (:func:`ingestion`); with several replicas each one
that starts does so, and the first to finish stores the chunks (the others' work is dropped).

Search is hybrid (``serving.retrieval.search``): BM25 over Kiwi morphemes (an index per store revision, in the
process), fused by reciprocal rank with dense cosine ranked by the database (sqlite-vec / pgvector) when an
embedding model is served (BM25 alone otherwise; the search answer then says so in the ``X-Nexus-Retrieval``
header); a served cross-encoder (``--rerank-model``) then reranks the fused top chunks unless
``ranking_options.ranker`` is ``none``. Every route is scoped to the caller's organisation: another one's store
is 404.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from anyio import to_thread

from retrieval.hits import Hit
from serving.engines.base import Engine
from serving.errors import APIError
from serving.handlers.embeddings import cross_encoder_scores
from serving.protocol.common import random_id
from serving.protocol.vector_stores import (
    CreateFileBatchRequest,
    CreateVectorStoreRequest,
    FileBatch,
    FileCounts,
    LastError,
    SearchRequest,
    SearchResult,
    TextContent,
    VectorStore,
    VectorStoreFile,
)
from serving.retrieval.chunking import AUTO_MAX_TOKENS, AUTO_OVERLAP_TOKENS, chunk_text
from serving.retrieval.ingest import extract_text
from serving.retrieval.ingest_base import IngestError, IngestLimits
from serving.retrieval.ingest_process import extract_isolated
from serving.retrieval.search import (
    DEPTH,
    HybridWeights,
    StoreTerms,
    fuse_rankings,
    matches,
    merge_rankings,
    search_terms,
)
from serving.state import ServerState
from serving.storage.db import utcnow
from serving.storage.files import file_store
from serving.storage.vector_stores import (
    VectorStoreBatchRecord,
    VectorStoreFileRecord,
    VectorStoreRecord,
    VectorStoreStore,
    expires_at,
    is_expired,
    new_id,
    vector_store_store,
)
from serving.usage import UsageRecord

log = logging.getLogger(__name__)

EMBED_BATCH = 32
"""Chunks embedded per engine call during ingestion."""
_TASKS: set[asyncio.Task] = set()
_LIMITS: dict[int, asyncio.Semaphore] = {}


def store_of(state: ServerState) -> VectorStoreStore:
    """The server's vector store database."""
    return vector_store_store(state.settings.database_url)


def stale(record: VectorStoreRecord, seconds: float = 60.0) -> bool:
    """Whether the store's ``last_active_at`` is older than ``seconds`` (searches move it at most that often)."""
    last = record.last_active_at
    now = utcnow() if last.tzinfo is not None else utcnow().replace(tzinfo=None)
    return (now - last).total_seconds() > seconds


def embedder_of(state: ServerState) -> Engine | None:
    """The served embedding model (or the main model when it is a pooling one), else None: BM25 only."""
    if state.embedder is not None:
        return state.embedder
    return state.engine if state.engine.runner == "pool" else None


def not_found(store_id: str) -> APIError:
    """404 for a store that does not exist or belongs to another organisation."""
    return APIError(f"No vector store found with id '{store_id}'.", 404, "invalid_request_error", "vector_store_id",
                    "not_found")


def file_not_found(file_id: str) -> APIError:
    """404 for a file that is not in the store."""
    return APIError(f"No file found with id '{file_id}' in this vector store.", 404, "invalid_request_error",
                    "file_id", "not_found")


def _ts(value: Any) -> int:
    return int(value.timestamp()) if value is not None else 0


def chunking_of(strategy: Any, default: dict | None = None) -> dict:
    """A request's chunking strategy as stored and shown (``auto`` is OpenAI's static 800 / 400)."""
    if strategy is None:
        return default or {"type": "static", "static": {"max_chunk_size_tokens": AUTO_MAX_TOKENS,
                                                        "chunk_overlap_tokens": AUTO_OVERLAP_TOKENS}}
    if strategy.type == "static":
        return {"type": "static", "static": strategy.static.model_dump()}
    return chunking_of(None)


def store_object(record: VectorStoreRecord, counts: dict[str, int]) -> VectorStore:
    """A store as the API shows it."""
    file_counts = FileCounts(in_progress=counts["in_progress"], completed=counts["completed"],
                             failed=counts["failed"], cancelled=counts["cancelled"],
                             total=sum(counts[k] for k in ("in_progress", "completed", "failed", "cancelled")))
    status = "expired" if is_expired(record) else "in_progress" if counts["in_progress"] else "completed"
    expiry = expires_at(record)
    return VectorStore(id=record.id, created_at=_ts(record.created_at), name=record.name,
                       description=record.description, usage_bytes=counts["usage_bytes"], file_counts=file_counts,
                       status=status, expires_after={"anchor": "last_active_at", "days": record.expires_days}
                       if record.expires_days is not None else None, expires_at=_ts(expiry) if expiry else None,
                       last_active_at=_ts(record.last_active_at), metadata=record.meta or {})


def file_object(row: VectorStoreFileRecord) -> VectorStoreFile:
    """A store's file as the API shows it."""
    return VectorStoreFile(id=row.file_id, created_at=_ts(row.created_at), vector_store_id=row.store_id,
                           usage_bytes=row.usage_bytes or 0, status=row.status,  # type: ignore[arg-type]
                           last_error=LastError(**row.last_error) if row.last_error else None,
                           attributes=row.attributes or {}, chunking_strategy=row.chunking)


def batch_object(batch: VectorStoreBatchRecord, counts: dict[str, int]) -> FileBatch:
    """A file batch with its files' counts; its status is theirs."""
    file_counts = FileCounts(in_progress=counts["in_progress"], completed=counts["completed"],
                             failed=counts["failed"], cancelled=counts["cancelled"],
                             total=sum(counts[k] for k in ("in_progress", "completed", "failed", "cancelled")))
    if batch.cancelled:
        status = "cancelled" if not counts["in_progress"] else "in_progress"
    elif counts["in_progress"]:
        status = "in_progress"
    else:
        status = "failed" if counts["failed"] and not counts["completed"] else "completed"
    return FileBatch(id=batch.id, created_at=_ts(batch.created_at), vector_store_id=batch.store_id,
                     status=status, file_counts=file_counts)  # type: ignore[arg-type]


async def described(state: ServerState, record: VectorStoreRecord) -> VectorStore:
    """The store with its current file counts."""
    counts = await to_thread.run_sync(store_of(state).counts, [record.id])
    return store_object(record, counts[record.id])


async def owned_store(state: ServerState, store_id: str, owner: int | None, usage: UsageRecord) -> VectorStoreRecord:
    """The caller's store ``store_id``, or 404."""
    usage.start("vector_stores", None, None)
    usage.resources.append(store_id)
    record = await to_thread.run_sync(store_of(state).get, store_id, owner)
    if record is None:
        raise not_found(store_id)
    return record


async def owned_file(state: ServerState, store: VectorStoreRecord, file_id: str) -> VectorStoreFileRecord:
    """A file of the caller's store, or 404."""
    row = await to_thread.run_sync(store_of(state).get_file, store.id, file_id)
    if row is None:
        raise file_not_found(file_id)
    return row


# ------------------------------------------------------------------------------------------ ingestion


@dataclass
class NewFile:
    """A file to add: its id, attributes and chunking strategy (None: the store's default)."""

    file_id: str
    attributes: dict[str, Any]
    chunking: Any


async def add_files(state: ServerState, store: VectorStoreRecord, files: list[NewFile], owner: int | None,
                    usage: UsageRecord, batch_id: str | None = None) -> list[VectorStoreFileRecord]:
    """Check that the caller owns every file (404 otherwise, nothing added), record them ``in_progress`` and
    start their ingestion."""
    if is_expired(store):
        raise APIError(f"Vector store {store.id} has expired.", 400, param="vector_store_id", code="expired")
    uploads = file_store(state.settings.database_url, state.settings.data_dir)
    entries = []
    for item in files:
        usage.resources.append(item.file_id)
        upload = await to_thread.run_sync(uploads.get, item.file_id, owner)
        if upload is None:
            raise APIError(f"No such File object: {item.file_id}", 404, "invalid_request_error", "file_id",
                           "file_not_found")
        entries.append((item.file_id, upload.filename, item.attributes or {},
                        chunking_of(item.chunking, store.chunking)))
    rows = await to_thread.run_sync(store_of(state).add_files, store, entries, batch_id)
    for row in rows:
        _start(state, row)
    return rows


def _start(state: ServerState, row: VectorStoreFileRecord) -> None:
    task = asyncio.get_running_loop().create_task(ingest(state, row, row.org_id))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


@asynccontextmanager
async def ingestion(app: Any) -> AsyncIterator[None]:
    """The server's lifespan part for ingestion: files a stopped server left ``in_progress`` are ingested again;
    at shutdown the tasks of this server are cancelled and their files stay ``in_progress`` for the next start."""
    state = getattr(app.state, "nexus", None)
    if state is not None:
        try:
            for row in await to_thread.run_sync(store_of(state).pending_files):
                _start(state, row)
        except Exception:  # the server starts anyway; the files wait for the next start
            log.exception("could not resume vector store ingestion")
    try:
        yield
    finally:
        loop = asyncio.get_running_loop()
        mine = [task for task in _TASKS if task.get_loop() is loop]
        for task in mine:
            task.cancel()
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)


def _limit(state: ServerState) -> asyncio.Semaphore:
    loop = id(asyncio.get_running_loop())
    if loop not in _LIMITS:
        _LIMITS[loop] = asyncio.Semaphore(state.settings.vector_store_ingest_concurrency)
    return _LIMITS[loop]


def limits_of(state: ServerState) -> IngestLimits:
    """The server's bounds on one document."""
    settings = state.settings
    return IngestLimits(max_chars=settings.ingest_max_chars,
                        max_uncompressed_bytes=settings.ingest_max_uncompressed_bytes)


async def embed(engine: Engine, texts: list[str]) -> list[np.ndarray]:
    """Unit vectors of ``texts`` from the pooling engine (inputs cut to its context)."""
    out: list[np.ndarray] = []
    limit = engine.max_model_len
    for start in range(0, len(texts), EMBED_BATCH):
        batch = texts[start:start + EMBED_BATCH]
        ids = [list(x)[:limit] for x in engine.tokenizer(batch).input_ids]
        vectors = np.asarray(await engine.pool(ids, random_id("vsemb")), dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        out += list(vectors)
    return out


async def ingest(state: ServerState, row: VectorStoreFileRecord, owner: int | None) -> None:
    """Extract, chunk, index and embed one file; never raises (failures go to ``last_error``)."""
    store = store_of(state)
    try:
        async with _limit(state):
            uploads = file_store(state.settings.database_url, state.settings.data_dir)
            upload = await to_thread.run_sync(uploads.get, row.file_id, owner)
            if upload is None:
                raise IngestError("the file was deleted before it could be read")
            timeout = state.settings.ingest_timeout_s
            if timeout > 0:
                text = await to_thread.run_sync(extract_isolated, uploads.path(upload), upload.filename,
                                                limits_of(state), timeout)
            else:
                text = await to_thread.run_sync(extract_text, uploads.path(upload), upload.filename, limits_of(state))
            engine = embedder_of(state)
            tokenizer = engine.tokenizer if engine is not None else state.tokenizer
            static = row.chunking["static"]
            chunks = await to_thread.run_sync(chunk_text, text, tokenizer, static["max_chunk_size_tokens"],
                                              static["chunk_overlap_tokens"])
            terms = await to_thread.run_sync(search_terms, chunks)
            vectors: list[bytes | None] = [None] * len(chunks)
            if engine is not None and chunks:
                vectors = [v.astype("<f4").tobytes() for v in await embed(engine, chunks)]
            await to_thread.run_sync(store.finish_file, row, list(zip(chunks, terms, vectors, strict=True)))
    except IngestError as err:
        await to_thread.run_sync(store.fail_file, row, err.code, err.message)
    except asyncio.CancelledError:  # the server is stopping: the file stays in_progress for the next start
        raise
    except Exception as err:  # a bug or an engine failure: the file fails, the server goes on
        log.exception("ingesting %s into %s failed", row.file_id, row.store_id)
        with _suppress():
            await to_thread.run_sync(store.fail_file, row, "server_error",
                                     f"the file could not be processed: {type(err).__name__}")


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, tb: Any) -> bool:
        if kind is not None and kind is not asyncio.CancelledError:
            log.warning("could not record an ingestion failure: %s", value)
            return True
        return False


# ----------------------------------------------------------------------------------------- handlers


async def create_store(state: ServerState, body: CreateVectorStoreRequest, usage: UsageRecord,
                       owner: int | None) -> VectorStore:
    """A new store, with its first files being ingested."""
    usage.start("vector_stores", None, None)
    default = chunking_of(body.chunking_strategy) if body.chunking_strategy is not None else None
    record = await to_thread.run_sync(
        store_of(state).create, owner, body.name, body.description,
        body.expires_after.days if body.expires_after else None, body.metadata or {}, default)
    usage.resources.append(record.id)
    if body.file_ids:
        try:
            await add_files(state, record, [NewFile(f, {}, None) for f in body.file_ids], owner, usage)
        except APIError:
            await to_thread.run_sync(store_of(state).delete, record)
            raise
    return await described(state, record)


async def create_batch(state: ServerState, store: VectorStoreRecord, body: CreateFileBatchRequest,
                       usage: UsageRecord, owner: int | None) -> FileBatch:
    """A file batch: its files added together."""
    if body.files:
        files = [NewFile(f.file_id, f.attributes or {}, f.chunking_strategy) for f in body.files]
    else:
        files = [NewFile(f, body.attributes or {}, body.chunking_strategy) for f in body.file_ids or []]
    batch_id = new_id("vsfb")
    usage.resources.append(batch_id)
    await add_files(state, store, files, owner, usage, batch_id)
    return await batch_status(state, store, batch_id)


async def batch_status(state: ServerState, store: VectorStoreRecord, batch_id: str) -> FileBatch:
    """A batch of the caller's store, or 404."""
    batch = await to_thread.run_sync(store_of(state).get_batch, store.id, batch_id)
    if batch is None:
        raise APIError(f"No file batch found with id '{batch_id}'.", 404, param="batch_id", code="not_found")
    counts = await to_thread.run_sync(store_of(state).counts, [store.id], batch_id)
    return batch_object(batch, counts[store.id])


_TERMS: OrderedDict[tuple[str, str], tuple[int, StoreTerms]] = OrderedDict()
_TERMS_LOCK = threading.Lock()
SNAPSHOTS_KEPT = 16
"""Stores whose BM25 index a process keeps in memory (least recently searched dropped first)."""
RERANK_CANDIDATES = 20
"""The fused top chunks a served cross-encoder reranks (at least ``max_num_results``)."""


def store_terms(store: VectorStoreStore, database_url: str, store_id: str) -> StoreTerms:
    """The store's BM25 index at its current revision (built again when a file was added or removed since)."""
    key = (database_url, store_id)
    revision = store.revision(store_id)
    with _TERMS_LOCK:
        cached = _TERMS.get(key)
        if cached is not None and cached[0] == revision:
            _TERMS.move_to_end(key)
            return cached[1]
        built = StoreTerms(store.chunk_terms(store_id))
        _TERMS[key] = (revision, built)
        while len(_TERMS) > SNAPSHOTS_KEPT:
            _TERMS.popitem(last=False)
        return built


def rank_chunks(store: VectorStoreStore, indexes: dict[str, StoreTerms], allowed: dict[str, set[str]],
                query: str, query_vector: np.ndarray | None, filtered: bool, top: int,
                threshold: float | None, weights: HybridWeights | None = None) -> list[Hit]:
    """Fused (chunk id, score) hits of the stores: BM25 from ``indexes``, dense from the database, each over the
    ``allowed`` files of every store only (the dense side is left unrestricted when nothing is ``filtered``:
    only completed files have chunks)."""
    rankings = [merge_rankings([indexes[sid].ranking(query, allowed[sid]) for sid in indexes])]
    if query_vector is not None:
        rankings.append(merge_rankings([store.nearest(sid, query_vector, DEPTH, sorted(allowed[sid])
                                                      if filtered else None) for sid in indexes]))
    return fuse_rankings(rankings, top, threshold, weights)


async def rerank(state: ServerState, query: str, hits: list[Hit], texts: dict[int, tuple[str, str, str]],
                 usage: UsageRecord) -> list[Hit]:
    """The hits scored again by the served cross-encoder on (query, chunk text), best first (ties keep the
    fused order); documents are cut to fit its context."""
    documents = [texts[h.index][2] for h in hits]
    scores = await cross_encoder_scores(state.reranker, query, documents, usage, truncate=True)  # type: ignore[arg-type]
    order = sorted(range(len(hits)), key=lambda i: -scores[i])
    return [Hit(hits[i].index, round(float(scores[i]), 6) if math.isfinite(scores[i]) else 0.0) for i in order]


def hybrid_weights(state: ServerState, body: SearchRequest) -> HybridWeights:
    """The request's ``ranking_options.hybrid_search`` weights, else the server's."""
    given = body.ranking_options.hybrid_search if body.ranking_options else None
    if given is not None:
        return HybridWeights(text=given.text_weight, embedding=given.embedding_weight)
    return HybridWeights(text=state.settings.hybrid_text_weight, embedding=state.settings.hybrid_embedding_weight)


def reranks(state: ServerState, body: SearchRequest) -> bool:
    """Whether the fused results go through the cross-encoder: one is served and ``ranker`` is not ``none``."""
    ranker = body.ranking_options.ranker if body.ranking_options else None
    return state.reranker is not None and ranker != "none"


async def search(state: ServerState, store_ids: list[str], body: SearchRequest, usage: UsageRecord,
                 owner: int | None, records: list[VectorStoreRecord] | None = None) -> tuple[list[SearchResult], str]:
    """Hybrid search of the caller's stores: the results and the method (``hybrid`` or ``bm25``, ``+rerank``
    when a cross-encoder reordered them). Filters decide which chunks may rank at all; BM25 and dense rankings
    are computed over those only, fused, then reranked; ``score_threshold`` applies to the final score."""
    store = store_of(state)
    if records is None:
        records = [await owned_store(state, sid, owner, usage) for sid in store_ids]
    for record in records:
        if is_expired(record):
            raise APIError(f"Vector store {record.id} has expired.", 400, param="vector_store_id", code="expired")
    queries = [body.query] if isinstance(body.query, str) else body.query
    query = " ".join(q for q in queries if q.strip())
    ids = list(dict.fromkeys(r.id for r in records))
    url = state.settings.database_url
    indexes = {sid: await to_thread.run_sync(store_terms, store, url, sid) for sid in ids}
    files = await to_thread.run_sync(store.completed_files, ids)
    allowed = {sid: {f for (s, f), (_, attrs) in files.items() if s == sid and matches(body.filters, attrs)}
               for sid in ids}
    engine = embedder_of(state)
    query_vector = None
    if engine is not None:
        tokens = list(engine.tokenizer(query).input_ids)[:engine.max_model_len]
        if await to_thread.run_sync(store.has_vectors, ids):
            await usage.reserve(len(tokens))
            usage.prompt_tokens += len(tokens)
            query_vector = (await embed(engine, [query]))[0]
    threshold = body.ranking_options.score_threshold if body.ranking_options else None
    rerank_on = reranks(state, body)
    top = max(body.max_num_results, RERANK_CANDIDATES) if rerank_on else body.max_num_results
    hits = await to_thread.run_sync(rank_chunks, store, indexes, allowed, query, query_vector,
                                    body.filters is not None, top, None if rerank_on else threshold,
                                    hybrid_weights(state, body))
    texts = await to_thread.run_sync(store.chunk_texts, [h.index for h in hits])
    hits = [h for h in hits if h.index in texts]
    if rerank_on and hits:
        hits = await rerank(state, query, hits, texts, usage)
        if threshold is not None:
            hits = [h for h in hits if h.score >= threshold]
        hits = hits[:body.max_num_results]
    for record in records:
        if stale(record):
            await to_thread.run_sync(store.touch, record)
    results = []
    for hit in hits:
        sid, file_id, text = texts[hit.index]
        if (sid, file_id) not in files:
            continue  # removed meanwhile
        filename, attributes = files[(sid, file_id)]
        results.append(SearchResult(file_id=file_id, filename=filename, score=hit.score, attributes=attributes,
                                    content=[TextContent(text=text)]))
    method = "hybrid" if query_vector is not None else "bm25"
    return results, method + "+rerank" if rerank_on else method
