"""The Batch API routes: thin. Every route is scoped to the caller's organisation (others get 404)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from serving.handlers.batches import cancel_batch, create_batch, list_batches, retrieve_batch
from serving.protocol.batches import Batch, BatchList, CreateBatchRequest
from serving.routes.files import OwnerDep
from serving.routes.openai import StateDep, UsageDep

router = APIRouter()


def _runner(request: Request) -> object | None:
    return getattr(request.app.state, "batch_runner", None)


@router.post("/v1/batches", response_model=Batch)
async def create(body: CreateBatchRequest, request: Request, state: StateDep, usage: UsageDep,
                 owner: OwnerDep) -> Batch:
    """Queue a batch of requests from an uploaded ``batch`` file."""
    routes = {getattr(route, "path", "") for route in request.app.routes}
    return await create_batch(state, body, routes, owner, usage, _runner(request))


@router.get("/v1/batches", response_model=BatchList)
async def list_(state: StateDep, usage: UsageDep, owner: OwnerDep,
                limit: Annotated[int, Query(ge=1, le=100)] = 20, after: str | None = None) -> BatchList:
    """The caller's batches, newest first."""
    return await list_batches(state, owner, limit, after, usage)


@router.get("/v1/batches/{batch_id}", response_model=Batch)
async def retrieve(batch_id: str, state: StateDep, usage: UsageDep, owner: OwnerDep) -> Batch:
    """One batch, with its live request counts."""
    return await retrieve_batch(state, batch_id, owner, usage)


@router.post("/v1/batches/{batch_id}/cancel", response_model=Batch)
async def cancel(batch_id: str, request: Request, state: StateDep, usage: UsageDep, owner: OwnerDep) -> Batch:
    """Cancel a batch: no new lines start; it ends ``cancelled`` with what finished."""
    return await cancel_batch(state, batch_id, owner, usage, _runner(request))
