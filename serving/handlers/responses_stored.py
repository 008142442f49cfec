"""The stored-response routes' logic: retrieve, delete and list the input items of a response, scoped to the
caller's organisation (another organisation's response is not found)."""

from __future__ import annotations

from serving.errors import APIError
from serving.handlers.responses import store_of
from serving.protocol.responses import InputItemList
from serving.state import ServerState
from serving.storage.responses import Stored
from serving.usage import UsageRecord


def not_found(rid: str) -> APIError:
    """404 for a response id that does not exist or belongs to another organisation."""
    return APIError(f"Response with id '{rid}' not found.", 404, param="response_id")


async def stored(state: ServerState, rid: str, owner: int | None, usage: UsageRecord) -> Stored:
    """The stored response ``rid`` of ``owner``, or 404."""
    usage.start("responses", None, None)
    usage.resources.append(rid)
    found = await store_of(state).get(rid, owner)
    if found is None:
        raise not_found(rid)
    return found


async def delete_response(state: ServerState, rid: str, owner: int | None, usage: UsageRecord) -> None:
    """Delete ``rid`` of ``owner``, or 404."""
    usage.start("responses", None, None)
    usage.resources.append(rid)
    if not await store_of(state).delete(rid, owner):
        raise not_found(rid)


def input_item_page(found: Stored, limit: int, order: str, after: str | None) -> InputItemList:
    """A page of the conversation a response answered (``order`` ``desc``: newest first, OpenAI's default)."""
    items = list(found.input_items if order == "asc" else reversed(found.input_items))
    if after is not None:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return InputItemList(data=page, first_id=page[0]["id"] if page else None,
                         last_id=page[-1]["id"] if page else None, has_more=len(items) > limit)
