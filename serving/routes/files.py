"""The Files API routes: thin. Every route is scoped to the caller's organisation (others get 404)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse

from serving.handlers.files import create_file, delete_file, file_object, list_files, owned_file, store_of
from serving.protocol.files import FileDeleted, FileList, FileObject
from serving.routes.openai import StateDep, UsageDep

router = APIRouter()


def get_owner(request: Request) -> int | None:
    """The caller's organisation id (None when the server runs without keys)."""
    principal = getattr(request.state, "principal", None)
    return principal.org_id if principal is not None else None


OwnerDep = Annotated[int | None, Depends(get_owner)]
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"],
    "properties": {"file": {"type": "string", "format": "binary"}, "purpose": {"type": "string"}}}}}}}


@router.post("/v1/files", response_model=FileObject, openapi_extra=UPLOAD_BODY)
async def upload(request: Request, state: StateDep, usage: UsageDep, owner: OwnerDep) -> FileObject:
    """Upload a file (multipart: ``file`` and ``purpose``), streamed to disk."""
    return await create_file(request, state, usage, owner)


@router.get("/v1/files", response_model=FileList)
async def list_(state: StateDep, usage: UsageDep, owner: OwnerDep, purpose: str | None = None,
                limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000, after: str | None = None,
                order: Literal["asc", "desc"] = "desc") -> FileList:
    """The caller's files, newest first by default."""
    return await list_files(state, owner, purpose, limit, after, order, usage)


@router.get("/v1/files/{file_id}", response_model=FileObject)
async def retrieve(file_id: str, state: StateDep, usage: UsageDep, owner: OwnerDep) -> FileObject:
    """One file's metadata."""
    return file_object(await owned_file(state, file_id, owner, usage))


@router.get("/v1/files/{file_id}/content")
async def content(file_id: str, state: StateDep, usage: UsageDep, owner: OwnerDep) -> FileResponse:
    """The file's bytes, streamed from disk."""
    record = await owned_file(state, file_id, owner, usage)
    return FileResponse(store_of(state).path(record), media_type="application/octet-stream",
                        filename=record.filename)


@router.delete("/v1/files/{file_id}", response_model=FileDeleted)
async def delete(file_id: str, state: StateDep, usage: UsageDep, owner: OwnerDep) -> FileDeleted:
    """Delete a file (409 while a running batch reads it)."""
    await delete_file(state, file_id, owner, usage)
    return FileDeleted(id=file_id)
