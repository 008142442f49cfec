"""``POST /v1/responses`` with ``stream: true``: OpenAI's typed events, each with a ``sequence_number``.

``response.created``, ``response.in_progress``; per output item ``response.output_item.added``, for a message
``response.content_part.added``, ``response.output_text.delta``/``.done``, ``response.content_part.done``, for a
function call ``response.function_call_arguments.delta``/``.done``; ``response.output_item.done``; last
``response.completed``, ``response.incomplete`` (cut by ``max_output_tokens``) or ``response.failed``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from serving.chat import held_back_suffix, new_tool_call_id, parse_tool_output
from serving.errors import APIError
from serving.generation import stream_jobs
from serving.handlers.responses import (
    Prepared,
    finish,
    function_items,
    message_item,
    output_logprobs,
    prepare,
    save,
)
from serving.protocol.responses import (
    CreateResponseRequest,
    FunctionToolCall,
    OutputItem,
    OutputText,
    response_id,
)
from serving.state import ServerState
from serving.usage import UsageRecord

logger = logging.getLogger(__name__)

FINAL_EVENTS = ("event: response.completed\n", "event: response.incomplete\n", "event: response.failed\n")


def is_final_event(event: str) -> bool:
    """Whether ``event`` ends a Responses stream (the usage record is committed before it goes out)."""
    return event.startswith(FINAL_EVENTS)


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


class _Events:
    """Numbers events and writes them as SSE lines named by their type."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **{k: _dump(v) for k, v in fields.items()}}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"


class _MessageStream:
    """The assistant message as it streams: opened once visible text is more than whitespace."""

    def __init__(self, event: _Events, output_index: int) -> None:
        self.event, self.index = event, output_index
        self.id = response_id("msg")
        self.text = ""
        self.pending = ""
        self.opened = False
        self.logprobs: list[dict] = []
        self.pending_logprobs: list[dict] = []

    def add(self, piece: str, logprobs: list[dict] | None = None) -> list[str]:
        """Events for ``piece`` of visible text (``logprobs``: of the tokens generated since the last call;
        they go out with the next text shown)."""
        self.pending += piece
        self.pending_logprobs += logprobs or []
        if not self.pending or (not self.opened and not self.pending.strip()):
            return []
        out = []
        if not self.opened:
            self.opened = True
            out.append(self.event("response.output_item.added", output_index=self.index,
                                  item={"id": self.id, "type": "message", "role": "assistant",
                                        "status": "in_progress", "content": []}))
            out.append(self.event("response.content_part.added", item_id=self.id, output_index=self.index,
                                  content_index=0, part=OutputText(text="")))
        out.append(self.event("response.output_text.delta", item_id=self.id, output_index=self.index,
                              content_index=0, delta=self.pending, logprobs=self.pending_logprobs))
        self.text += self.pending
        self.logprobs += self.pending_logprobs
        self.pending, self.pending_logprobs = "", []
        return out

    def close(self, incomplete: bool) -> tuple[list[str], OutputItem | None]:
        """The closing events and the finished item (None when no text came)."""
        if not self.opened:
            return [], None
        self.logprobs += self.pending_logprobs
        item = message_item(self.id, self.text, incomplete, self.logprobs)
        where = {"item_id": self.id, "output_index": self.index, "content_index": 0}
        return [self.event("response.output_text.done", **where, text=self.text, logprobs=self.logprobs),
                self.event("response.content_part.done", **where, part=item.content[0]),
                self.event("response.output_item.done", output_index=self.index, item=item)], item


def _call_events(event: _Events, index: int, call: FunctionToolCall, streamed: bool = False) -> list[str]:
    """A function call's events; ``streamed``: its item was added and its arguments sent already."""
    out = []
    if not streamed:
        added = call.model_copy(update={"arguments": "", "status": "in_progress"})
        out.append(event("response.output_item.added", output_index=index, item=added))
        out.append(event("response.function_call_arguments.delta", item_id=call.id, output_index=index,
                         delta=call.arguments))
    out.append(event("response.function_call_arguments.done", item_id=call.id, output_index=index,
                     name=call.name, arguments=call.arguments))
    out.append(event("response.output_item.done", output_index=index, item=call))
    return out


class _TextGate:
    """What of the generated text may be shown now; a possible ``<tool_call>`` is held back (auto mode)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.text = ""
        self.sent = 0
        self.buffering = mode == "required"

    def visible(self, piece: str) -> str:
        """The newly showable text."""
        self.text += piece
        if self.buffering:
            return ""
        end = len(self.text)
        if self.mode == "auto":
            if "<tool_call>" in self.text[self.sent:]:
                self.buffering = True
                end = self.text.index("<tool_call>", self.sent)
            else:
                end -= held_back_suffix(self.text)
        out, self.sent = self.text[self.sent:end], end
        return out

    def rest(self) -> str:
        """Text not shown yet."""
        return self.text[self.sent:]


async def _generate(state: ServerState, prepared: Prepared, usage: UsageRecord,
                    event: _Events) -> AsyncIterator[str | tuple[list[OutputItem], str | None, int]]:
    """Output events as the engine produces them, then ``(output items, finish reason, output tokens)``."""
    plan = prepared.plan
    gate = _TextGate(plan.mode)
    message = _MessageStream(event, 0)
    named_call: FunctionToolCall | None = None
    if plan.mode == "named":  # the whole output is the arguments: stream them as they come
        named_call = FunctionToolCall(id=response_id("fc"), call_id=new_tool_call_id(),
                                      name=plan.named_function or "", arguments="", status="in_progress")
        yield event("response.output_item.added", output_index=0, item=named_call)
    tokens, reason = 0, None
    async for _, delta in stream_jobs(state.engine, [prepared.job], prepared.response.id, prepared.lora,
                                      state.metrics, usage):
        tokens += len(delta.token_ids)
        reason = delta.finish_reason or reason
        if named_call is not None:
            if delta.text:
                named_call.arguments += delta.text
                yield event("response.function_call_arguments.delta", item_id=named_call.id, output_index=0,
                            delta=delta.text)
            continue
        for line in message.add(gate.visible(delta.text), output_logprobs(state, prepared, delta.logprobs)):
            yield line
    incomplete = reason == "length"
    if named_call is not None:
        named_call.status = "incomplete" if incomplete else "completed"
        for line in _call_events(event, 0, named_call, streamed=True):
            yield line
        yield [named_call], reason, tokens
        return
    rest = gate.rest()
    content, calls = parse_tool_output(plan, rest) if gate.buffering or plan.mode == "auto" else (rest, [])
    for line in message.add(content or ""):
        yield line
    closing, item = message.close(incomplete and not calls)
    for line in closing:
        yield line
    output: list[OutputItem] = [item] if item is not None else []
    for call in function_items(prepared, calls):
        for line in _call_events(event, len(output), call):
            yield line
        output.append(call)
    yield output, reason, tokens


async def stream_response(state: ServerState, request: CreateResponseRequest, usage: UsageRecord,
                          owner: int | None) -> AsyncIterator[str]:
    """Validate and start the request (errors raise before the stream starts), then yield SSE events."""
    prepared = await prepare(state, request, usage, owner)

    async def events() -> AsyncIterator[str]:
        event = _Events()
        yield event("response.created", response=prepared.response)
        yield event("response.in_progress", response=prepared.response)
        output: list[OutputItem] = []
        error: APIError | None = None
        reason, tokens = None, 0
        try:
            async for line in _generate(state, prepared, usage, event):
                if isinstance(line, str):
                    yield line
                else:
                    output, reason, tokens = line
        except APIError as err:
            error = err
        except Exception:
            logger.exception("response stream failed")
            error = APIError("The server had an error while processing your request.", 500, "server_error",
                             code="server_error")
        if error is not None:
            usage.error_type = error.type
            tokens = usage.completion_tokens
        response = finish(prepared, output, reason, tokens, error)
        await save(state, prepared, response)
        yield event(f"response.{response.status}", response=response)

    return events()
