"""The vector store routes (OpenAI's ``/v1/vector_stores`` family): thin. Every route is scoped to the caller's
organisation: another organisation's store answers 404, whatever the route."""

from __future__ import annotations

from typing import Annotated, Literal

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request, Response

from serving.handlers.vector_stores import (
    NewFile,
    add_files,
    batch_object,
    batch_status,
    create_batch,
    create_store,
    described,
    file_object,
    owned_file,
    owned_store,
    search,
    store_object,
    store_of,
)
from serving.protocol.vector_stores import (
    CreateFileBatchRequest,
    CreateVectorStoreFileRequest,
    CreateVectorStoreRequest,
    FileBatch,
    FileContentPage,
    ModifyVectorStoreRequest,
    SearchRequest,
    SearchResultsPage,
    TextContent,
    UpdateVectorStoreFileRequest,
    VectorStore,
    VectorStoreDeleted,
    VectorStoreFile,
    VectorStoreFileDeleted,
    VectorStoreList,
)
from serving.routes.openai import StateDep, UsageDep

router = APIRouter()


def get_owner(request: Request) -> int | None:
    """The caller's organisation id (None when the server runs without keys)."""
    principal = getattr(request.state, "principal", None)
    return principal.org_id if principal is not None else None


OwnerDep = Annotated[int | None, Depends(get_owner)]
Limit = Annotated[int, Query(ge=1, le=100)]
Order = Literal["asc", "desc"]


def _page(data: list, more: bool) -> VectorStoreList:
    return VectorStoreList(data=data, has_more=more, first_id=data[0].id if data else None,
                           last_id=data[-1].id if data else None)


@router.post("/v1/vector_stores", response_model=VectorStore)
async def create(body: CreateVectorStoreRequest, state: StateDep, usage: UsageDep, owner: OwnerDep) -> VectorStore:
    """Create a vector store (its ``file_ids`` are ingested in the background)."""
    return await create_store(state, body, usage, owner)


@router.get("/v1/vector_stores", response_model=VectorStoreList)
async def list_(state: StateDep, usage: UsageDep, owner: OwnerDep, limit: Limit = 20, order: Order = "desc",
                after: str | None = None, before: str | None = None) -> VectorStoreList:
    """The caller's vector stores."""
    usage.start("vector_stores", None, None)
    store = store_of(state)
    rows, more = await to_thread.run_sync(store.page, owner, limit, after, before, order)
    counts = await to_thread.run_sync(store.counts, [r.id for r in rows])
    return _page([store_object(r, counts[r.id]) for r in rows], more)


@router.get("/v1/vector_stores/{vector_store_id}", response_model=VectorStore)
async def retrieve(vector_store_id: str, state: StateDep, usage: UsageDep, owner: OwnerDep) -> VectorStore:
    """One vector store."""
    return await described(state, await owned_store(state, vector_store_id, owner, usage))


@router.post("/v1/vector_stores/{vector_store_id}", response_model=VectorStore)
async def modify(vector_store_id: str, body: ModifyVectorStoreRequest, state: StateDep, usage: UsageDep,
                 owner: OwnerDep) -> VectorStore:
    """Change a store's name, expiry or metadata."""
    record = await owned_store(state, vector_store_id, owner, usage)
    values: dict = {}
    if "name" in body.model_fields_set:
        values["name"] = body.name
    if "metadata" in body.model_fields_set:
        values["meta"] = body.metadata or {}
    if "expires_after" in body.model_fields_set:
        values["expires_days"] = body.expires_after.days if body.expires_after else None
    if values:
        record = await to_thread.run_sync(lambda: store_of(state).update(record, **values))
    return await described(state, record)


@router.delete("/v1/vector_stores/{vector_store_id}", response_model=VectorStoreDeleted)
async def delete(vector_store_id: str, state: StateDep, usage: UsageDep, owner: OwnerDep) -> VectorStoreDeleted:
    """Delete a store, its chunks and its file links (the files themselves stay)."""
    record = await owned_store(state, vector_store_id, owner, usage)
    await to_thread.run_sync(store_of(state).delete, record)
    return VectorStoreDeleted(id=vector_store_id)


@router.post("/v1/vector_stores/{vector_store_id}/search", response_model=SearchResultsPage)
async def search_store(vector_store_id: str, body: SearchRequest, response: Response, state: StateDep,
                       usage: UsageDep, owner: OwnerDep) -> SearchResultsPage:
    """Hybrid search (Kiwi BM25 + dense, fused by rank) of the store's chunks whose files pass ``filters``."""
    results, method = await search(state, [vector_store_id], body, usage, owner)
    response.headers["X-Nexus-Retrieval"] = method
    queries = [body.query] if isinstance(body.query, str) else body.query
    return SearchResultsPage(search_query=queries, data=results)


# ------------------------------------------------------------------------------------------------ files


@router.post("/v1/vector_stores/{vector_store_id}/files", response_model=VectorStoreFile)
async def add_file(vector_store_id: str, body: CreateVectorStoreFileRequest, state: StateDep, usage: UsageDep,
                   owner: OwnerDep) -> VectorStoreFile:
    """Add an uploaded file (with ``attributes``) to the store; it is ingested in the background."""
    record = await owned_store(state, vector_store_id, owner, usage)
    [row] = await add_files(state, record, [NewFile(body.file_id, body.attributes or {}, body.chunking_strategy)],
                            owner, usage)
    return file_object(row)


@router.get("/v1/vector_stores/{vector_store_id}/files", response_model=VectorStoreList)
async def list_files(vector_store_id: str, state: StateDep, usage: UsageDep, owner: OwnerDep, limit: Limit = 20,
                     order: Order = "desc", after: str | None = None, before: str | None = None,
                     filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None
                     ) -> VectorStoreList:
    """The store's files (optionally of one status)."""
    record = await owned_store(state, vector_store_id, owner, usage)
    rows, more = await to_thread.run_sync(store_of(state).file_page, record.id, filter, None, limit, after, before,
                                          order)
    return _page([file_object(r) for r in rows], more)


@router.get("/v1/vector_stores/{vector_store_id}/files/{file_id}", response_model=VectorStoreFile)
async def retrieve_file(vector_store_id: str, file_id: str, state: StateDep, usage: UsageDep,
                        owner: OwnerDep) -> VectorStoreFile:
    """One file of the store, with its status and ``last_error``."""
    record = await owned_store(state, vector_store_id, owner, usage)
    return file_object(await owned_file(state, record, file_id))


@router.post("/v1/vector_stores/{vector_store_id}/files/{file_id}", response_model=VectorStoreFile)
async def update_file(vector_store_id: str, file_id: str, body: UpdateVectorStoreFileRequest, state: StateDep,
                      usage: UsageDep, owner: OwnerDep) -> VectorStoreFile:
    """Replace a file's attributes."""
    record = await owned_store(state, vector_store_id, owner, usage)
    row = await owned_file(state, record, file_id)
    return file_object(await to_thread.run_sync(store_of(state).set_attributes, row, body.attributes or {}))


@router.get("/v1/vector_stores/{vector_store_id}/files/{file_id}/content", response_model=FileContentPage)
async def file_content(vector_store_id: str, file_id: str, state: StateDep, usage: UsageDep,
                       owner: OwnerDep) -> FileContentPage:
    """The file's chunks, in order."""
    record = await owned_store(state, vector_store_id, owner, usage)
    await owned_file(state, record, file_id)
    texts = await to_thread.run_sync(store_of(state).file_chunks, record.id, file_id)
    return FileContentPage(data=[TextContent(text=t) for t in texts])


@router.delete("/v1/vector_stores/{vector_store_id}/files/{file_id}", response_model=VectorStoreFileDeleted)
async def remove_file(vector_store_id: str, file_id: str, state: StateDep, usage: UsageDep,
                      owner: OwnerDep) -> VectorStoreFileDeleted:
    """Take a file out of the store (the uploaded file stays)."""
    record = await owned_store(state, vector_store_id, owner, usage)
    row = await owned_file(state, record, file_id)
    await to_thread.run_sync(store_of(state).remove_file, row)
    return VectorStoreFileDeleted(id=file_id)


# ---------------------------------------------------------------------------------------------- batches


@router.post("/v1/vector_stores/{vector_store_id}/file_batches", response_model=FileBatch)
async def create_file_batch(vector_store_id: str, body: CreateFileBatchRequest, state: StateDep, usage: UsageDep,
                            owner: OwnerDep) -> FileBatch:
    """Add several files at once."""
    record = await owned_store(state, vector_store_id, owner, usage)
    return await create_batch(state, record, body, usage, owner)


@router.get("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}", response_model=FileBatch)
async def retrieve_file_batch(vector_store_id: str, batch_id: str, state: StateDep, usage: UsageDep,
                              owner: OwnerDep) -> FileBatch:
    """A batch and its files' counts."""
    record = await owned_store(state, vector_store_id, owner, usage)
    return await batch_status(state, record, batch_id)


@router.post("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel", response_model=FileBatch)
async def cancel_file_batch(vector_store_id: str, batch_id: str, state: StateDep, usage: UsageDep,
                            owner: OwnerDep) -> FileBatch:
    """Cancel the batch's files still in progress."""
    record = await owned_store(state, vector_store_id, owner, usage)
    await batch_status(state, record, batch_id)
    batch = await to_thread.run_sync(store_of(state).get_batch, record.id, batch_id)
    await to_thread.run_sync(store_of(state).cancel_batch, batch)
    counts = await to_thread.run_sync(store_of(state).counts, [record.id], batch_id)
    return batch_object(batch, counts[record.id])


@router.get("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files", response_model=VectorStoreList)
async def list_batch_files(vector_store_id: str, batch_id: str, state: StateDep, usage: UsageDep, owner: OwnerDep,
                           limit: Limit = 20, order: Order = "desc", after: str | None = None,
                           before: str | None = None,
                           filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None
                           ) -> VectorStoreList:
    """The batch's files."""
    record = await owned_store(state, vector_store_id, owner, usage)
    await batch_status(state, record, batch_id)
    rows, more = await to_thread.run_sync(store_of(state).file_page, record.id, filter, batch_id, limit, after,
                                          before, order)
    return _page([file_object(r) for r in rows], more)
