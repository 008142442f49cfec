"""OpenAI-compatible routes: thin. Pick the handler, return JSON or an SSE stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from serving.errors import APIError
from serving.handlers.chat_completions import create_chat_completion, stream_chat_completion
from serving.handlers.completions import create_completion, stream_completion
from serving.handlers.sse import DONE, sse
from serving.protocol import ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest, Model, ModelList
from serving.state import ServerState

logger = logging.getLogger(__name__)
router = APIRouter()
T = TypeVar("T")


def get_state(request: Request) -> ServerState:
    """The server state that ``build_app`` attached."""
    return request.app.state.nexus


StateDep = Annotated[ServerState, Depends(get_state)]


def usage_sink(request: Request, model: str):
    """A callback that records a request's usage where the security middleware (audit, credits) reads it."""

    def report(prompt_tokens: int, completion_tokens: int) -> None:
        request.state.served_model = model
        request.state.usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        request.app.state.nexus.metrics.count_tokens(prompt_tokens, completion_tokens)

    return report


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


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    """SSE response; an error after the stream started becomes an error event, then ``[DONE]``."""

    async def guarded() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield event
        except APIError as err:
            yield sse(err.body())
            yield DONE
        except Exception:
            logger.exception("stream failed")
            yield sse(APIError("internal error while streaming", 500, "server_error").body())
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


# With "stream": true the answer is Server-Sent Events (chunks, then `data: [DONE]`): documented in the schema.
STREAM_RESPONSE = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                         "description": "The completion, or with `stream: true` a stream of Server-Sent Events."}}


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=STREAM_RESPONSE)
async def chat_completions(body: ChatCompletionRequest, request: Request, state: StateDep):
    """Chat completion, streamed or whole."""
    lora = state.resolve_model(body.model)
    sink = usage_sink(request, body.model)
    if body.stream:
        return event_stream(await stream_chat_completion(state, body, lora, sink))
    return await until_disconnected(request, create_chat_completion(state, body, lora, sink))


@router.post("/v1/completions", response_model=Completion, responses=STREAM_RESPONSE)
async def completions(body: CompletionRequest, request: Request, state: StateDep):
    """Text completion (with echo and prompt logprobs for scoring), streamed or whole."""
    lora = state.resolve_model(body.model)
    sink = usage_sink(request, body.model)
    if body.stream:
        return event_stream(await stream_completion(state, body, lora, sink))
    return await until_disconnected(request, create_completion(state, body, lora, sink))
