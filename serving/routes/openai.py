"""OpenAI-compatible routes: thin. Pick the handler, return JSON or an SSE stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from serving.errors import APIError
from serving.handlers.chat_completions import create_chat_completion, stream_chat_completion
from serving.handlers.completions import create_completion, stream_completion
from serving.handlers.sse import DONE, sse
from serving.protocol import ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest, Model, ModelList
from serving.state import ServerState
from serving.usage import UsageRecord, usage_of

logger = logging.getLogger(__name__)
router = APIRouter()
T = TypeVar("T")


def get_state(request: Request) -> ServerState:
    """The server state that ``build_app`` attached."""
    return request.app.state.nexus


StateDep = Annotated[ServerState, Depends(get_state)]


def get_usage(request: Request) -> UsageRecord:
    """The request's usage record, which the security layer commits (credits, audit row)."""
    return usage_of(request.state)


UsageDep = Annotated[UsageRecord, Depends(get_usage)]


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it (and so aborting its engine requests) if the client goes away."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            raise APIError("client closed the request", 499, code="client_closed_request")


def _is_done(event: str) -> bool:
    return event == DONE


def event_stream(events: AsyncIterator[str], usage: UsageRecord,
                 is_final: Callable[[str], bool] = _is_done) -> StreamingResponse:
    """SSE response; an error after the stream started becomes an error event, then ``[DONE]``. The usage
    record is committed before the final event (``is_final``; chat and completions: ``[DONE]``) goes out."""

    async def guarded() -> AsyncIterator[str]:
        try:
            async for event in events:
                if is_final(event):
                    await usage.commit()
                yield event
        except APIError as err:
            usage.error_type = err.type
            yield sse(err.body())
            await usage.commit()
            yield DONE
        except Exception:
            logger.exception("stream failed")
            error = APIError("internal error while streaming", 500, "server_error")
            usage.error_type = error.type
            yield sse(error.body())
            await usage.commit()
            yield DONE

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(guarded(), media_type="text/event-stream", headers=headers)


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: StateDep) -> ModelList:
    """The served model and its LoRA adapters."""
    return state.model_list()


@router.get("/v1/models/{model_id:path}", response_model=Model)
async def retrieve_model(model_id: str, state: StateDep) -> Model:
    """One model by id (404 if not served)."""
    lora = state.resolve_model(model_id)
    wanted = lora or state.served_model_name
    return next(m for m in state.model_list().data if m.id == wanted)


def sse_response_doc(description: str, named_events: bool = False) -> dict:
    """The OpenAPI description of a 200 that is JSON, or with ``"stream": true`` Server-Sent Events: the schema
    of one event, its JSON as ``data`` (and, for ``named_events``, its type as the ``event`` name)."""
    event = {"type": "object", "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
             "required": ["event", "data"] if named_events else ["data"]}
    return {200: {"content": {"text/event-stream": {"schema": event}}, "description": description}}


# With "stream": true the answer is Server-Sent Events (chunks, then `data: [DONE]`): documented in the schema.
STREAM_RESPONSE = sse_response_doc("The completion, or with `stream: true` a stream of Server-Sent Events.")


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=STREAM_RESPONSE)
async def chat_completions(body: ChatCompletionRequest, request: Request, state: StateDep, usage: UsageDep):
    """Chat completion, streamed or whole."""
    if body.stream:
        return event_stream(await stream_chat_completion(state, body, usage), usage)
    return await until_disconnected(request, create_chat_completion(state, body, usage))


@router.post("/v1/completions", response_model=Completion, responses=STREAM_RESPONSE)
async def completions(body: CompletionRequest, request: Request, state: StateDep, usage: UsageDep):
    """Text completion (with echo and prompt logprobs for scoring), streamed or whole."""
    if body.stream:
        return event_stream(await stream_completion(state, body, usage), usage)
    return await until_disconnected(request, create_completion(state, body, usage))


unknown_paths = APIRouter()


@unknown_paths.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
                         include_in_schema=False)
async def unknown_path(path: str, request: Request) -> None:
    """404 in OpenAI's error shape for any path under /v1/ that no route serves."""
    raise APIError(f"Invalid URL ({request.method} /v1/{path})", 404, "invalid_request_error", code="unknown_url")
