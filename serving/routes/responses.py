"""The Responses API routes: thin. Pick the handler, return JSON or an SSE stream.

Every route is scoped to the caller's organisation: another organisation's response answers 404.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request

from serving.errors import APIError
from serving.handlers.responses import create_response
from serving.handlers.responses_stored import delete_response, input_item_page, stored
from serving.handlers.responses_stream import is_final_event, stream_response
from serving.protocol.responses import CreateResponseRequest, DeletedResponse, InputItemList, Response
from serving.routes.openai import StateDep, UsageDep, event_stream, sse_response_doc, until_disconnected

router = APIRouter()


def get_owner(request: Request) -> int | None:
    """The caller's organisation id (None when the server runs without keys)."""
    principal = getattr(request.state, "principal", None)
    return principal.org_id if principal is not None else None


OwnerDep = Annotated[int | None, Depends(get_owner)]

# Each Server-Sent Event: its type as the `event` name, the event's JSON as `data` (no `[DONE]` at the end).
STREAM_RESPONSE = sse_response_doc("The response, or with `stream: true` Server-Sent Events named by type.",
                                   named_events=True)


@router.post("/v1/responses", response_model=Response, responses=STREAM_RESPONSE)
async def create(body: CreateResponseRequest, request: Request, state: StateDep, usage: UsageDep, owner: OwnerDep):
    """Create a model response, streamed or whole (stored unless ``store`` is false)."""
    if body.stream:
        return event_stream(await stream_response(state, body, usage, owner), usage, is_final_event)
    return await until_disconnected(request, create_response(state, body, usage, owner))


@router.get("/v1/responses/{response_id}", response_model=Response)
async def retrieve(response_id: str, state: StateDep, usage: UsageDep, owner: OwnerDep) -> dict:
    """A stored response."""
    return (await stored(state, response_id, owner, usage)).response


@router.delete("/v1/responses/{response_id}", response_model=DeletedResponse)
async def delete(response_id: str, state: StateDep, usage: UsageDep, owner: OwnerDep) -> DeletedResponse:
    """Delete a stored response."""
    await delete_response(state, response_id, owner, usage)
    return DeletedResponse(id=response_id)


@router.post("/v1/responses/{response_id}/cancel", response_model=Response)
async def cancel(response_id: str, state: StateDep, usage: UsageDep, owner: OwnerDep) -> dict:
    """Cancel a background response. This server runs none in the background, so a stored one is final."""
    await stored(state, response_id, owner, usage)
    raise APIError("Only responses created with background=true can be cancelled.", param="response_id")


@router.get("/v1/responses/{response_id}/input_items", response_model=InputItemList)
async def input_items(response_id: str, state: StateDep, usage: UsageDep, owner: OwnerDep,
                      limit: Annotated[int, Query(ge=1, le=100)] = 20, order: Literal["asc", "desc"] = "desc",
                      after: str | None = None, include: Annotated[list[str] | None, Query()] = None
                      ) -> InputItemList:
    """The conversation a stored response answered (earlier turns of its chain included)."""
    return input_item_page(await stored(state, response_id, owner, usage), limit, order, after)
