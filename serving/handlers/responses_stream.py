"""``POST /v1/responses`` with ``stream: true``: OpenAI's typed events, each with a ``sequence_number``.

``response.created``, ``response.in_progress``; per output item ``response.output_item.added``, for a message
(or a reasoning model's thinking) ``response.content_part.added``, ``response.output_text.delta``/``.done``
(``response.reasoning_text.delta``/``.done``), ``response.content_part.done``, for a function call
``response.function_call_arguments.delta``/``.done``; ``response.output_item.done``; last
``response.completed``, ``response.incomplete`` (cut by ``max_output_tokens``) or ``response.failed``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from serving.chat import TOOL_CALL_OPEN, ToolPlan, held_back_suffix, new_tool_call_id, parse_tool_output
from serving.errors import APIError
from serving.generation import stream_jobs
from serving.handlers.responses import (
    Prepared,
    finish,
    function_items,
    message_item,
    output_logprobs,
    prepare,
    reasoning_item,
    save,
)
from serving.pii_guard import ReplyGuard, guard_reply
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


class _Output:
    """The output items as they stream: their events, in order, and the finished items."""

    def __init__(self, event: _Events) -> None:
        self.event = event
        self.items: list[OutputItem] = []
        self.open_index: int | None = None

    def next_index(self) -> int:
        """The output index of the item being opened."""
        return len(self.items)


class _TextItem:
    """A message (``output_text``) or a reasoning item (``reasoning_text``) as it streams: opened once its
    text is more than whitespace, masked by the PII guard as it goes."""

    def __init__(self, output: _Output, usage: UsageRecord, reasoning: bool = False) -> None:
        self.output, self.event, self.reasoning = output, output.event, reasoning
        self.id = response_id("rs" if reasoning else "msg")
        self.guard = ReplyGuard(usage)
        self.text = self.pending = ""
        self.index: int | None = None
        self.closed = False
        self.logprobs: list[dict] = []
        self.pending_logprobs: list[dict] = []

    @property
    def kind(self) -> str:
        return "reasoning_text" if self.reasoning else "output_text"

    def add(self, piece: str, logprobs: list[dict] | None = None, final: bool = False) -> list[str]:
        """Events for ``piece`` of visible text (``logprobs``: of the tokens since the last call; they go out
        with the next text shown); ``final``: the guard lets go of what it held back."""
        if self.closed:
            return []
        self.pending += self.guard.feed(piece) + (self.guard.flush() if final else "")
        self.pending_logprobs += logprobs or []
        if not self.pending or (self.index is None and not self.pending.strip()):
            return []
        out = []
        if self.index is None:
            self.index = self.output.next_index()
            self.output.items.append(self._item("in_progress"))  # its place; replaced when done
            item = {"id": self.id, "type": "reasoning", "summary": [], "content": [], "status": "in_progress"} \
                if self.reasoning else {"id": self.id, "type": "message", "role": "assistant",
                                         "status": "in_progress", "content": []}
            out.append(self.event("response.output_item.added", output_index=self.index, item=item))
            out.append(self.event("response.content_part.added", item_id=self.id, output_index=self.index,
                                  content_index=0, part={"type": self.kind, "text": ""}
                                  if self.reasoning else OutputText(text="")))
        where = {"item_id": self.id, "output_index": self.index, "content_index": 0}
        if self.reasoning:
            out.append(self.event("response.reasoning_text.delta", **where, delta=self.pending))
        else:
            out.append(self.event("response.output_text.delta", **where, delta=self.pending,
                                  logprobs=self.pending_logprobs))
        self.text += self.pending
        self.logprobs += self.pending_logprobs
        self.pending, self.pending_logprobs = "", []
        return out

    def _item(self, status: str) -> OutputItem:
        incomplete = status == "incomplete"
        if self.reasoning:
            return reasoning_item(self.id, self.text, incomplete)
        return message_item(self.id, self.text, incomplete, self.logprobs)

    def close(self, incomplete: bool) -> list[str]:
        """The closing events (none when no text came, or when already closed)."""
        out = self.add("", final=True) if not self.closed else []
        if self.index is None or self.closed:
            return out
        self.closed = True
        self.logprobs += self.pending_logprobs
        item = self._item("incomplete" if incomplete else "completed")
        self.output.items[self.index] = item
        where = {"item_id": self.id, "output_index": self.index, "content_index": 0}
        if self.reasoning:
            out.append(self.event("response.reasoning_text.done", **where, text=self.text))
        else:
            out.append(self.event("response.output_text.done", **where, text=self.text, logprobs=self.logprobs))
        out += [self.event("response.content_part.done", **where, part=item.content[0]),
                self.event("response.output_item.done", output_index=self.index, item=item)]
        return out


def _call_events(output: _Output, call: FunctionToolCall, index: int | None = None) -> list[str]:
    """A function call's closing events; ``index``: where its item was added already (arguments streamed)."""
    event, out = output.event, []
    if index is None:
        index = output.next_index()
        output.items.append(call)
        added = call.model_copy(update={"arguments": "", "status": "in_progress"})
        out.append(event("response.output_item.added", output_index=index, item=added))
        out.append(event("response.function_call_arguments.delta", item_id=call.id, output_index=index,
                         delta=call.arguments))
    output.items[index] = call
    out.append(event("response.function_call_arguments.done", item_id=call.id, output_index=index,
                     name=call.name, arguments=call.arguments))
    out.append(event("response.output_item.done", output_index=index, item=call))
    return out


class _TextGate:
    """What of the answer may be shown now: a possible ``<tool_call>`` is held back (Hermes), other tool-call
    formats and JSON call lists are parsed once the reply is complete."""

    def __init__(self, plan: ToolPlan) -> None:
        self.mode = plan.mode
        self.text = ""
        self.sent = 0
        self.buffering = plan.mode == "required" or (plan.mode == "auto" and not plan.holds_back_tags)

    def visible(self, piece: str) -> str:
        """The newly showable text."""
        self.text += piece
        if self.buffering:
            return ""
        end = len(self.text)
        if self.mode == "auto":
            if TOOL_CALL_OPEN in self.text[self.sent:]:
                self.buffering = True
                end = self.text.index(TOOL_CALL_OPEN, self.sent)
            else:
                end -= held_back_suffix(self.text)
        out, self.sent = self.text[self.sent:end], end
        return out

    def rest(self) -> str:
        """Text not shown yet."""
        return self.text[self.sent:]


async def _generate(state: ServerState, prepared: Prepared, usage: UsageRecord,
                    output: _Output) -> AsyncIterator[str | tuple[str | None, int]]:
    """Output events as the engine produces them, then ``(finish reason, output tokens)``; the items are in
    ``output.items``."""
    plan, event = prepared.plan, output.event
    thinking = state.parsers.reasoning_stream() if state.parsers is not None and state.parsers.reasons else None
    reasoning = _TextItem(output, usage, reasoning=True)
    gate, message = _TextGate(plan), _TextItem(output, usage)
    named: FunctionToolCall | None = None
    if plan.mode == "named" and usage.pii_guard == "off":  # the whole answer is the arguments: stream them
        named = FunctionToolCall(id=response_id("fc"), call_id=new_tool_call_id(),
                                 name=plan.named_function or "", arguments="", status="in_progress")
        output.items.append(named)
        yield event("response.output_item.added", output_index=0, item=named)
    tokens, reason, answer_ids = 0, None, []
    async for _, delta in stream_jobs(state.engine, [prepared.job], prepared.response.id, prepared.lora,
                                      state.metrics, usage):
        tokens += len(delta.token_ids)
        reason = delta.finish_reason or reason
        answer = delta.text
        if thinking is not None:
            thought, answer = thinking.feed(delta.text, delta.token_ids)
            for line in reasoning.add(thought):
                yield line
            if answer.strip():
                for line in reasoning.close(False):
                    yield line
        answer_ids += delta.token_ids
        if named is not None and answer:
            named.arguments += answer
            yield event("response.function_call_arguments.delta", item_id=named.id, output_index=0, delta=answer)
        elif named is None and plan.mode != "named":
            for line in message.add(gate.visible(answer), output_logprobs(state, prepared, delta.logprobs)):
                yield line
        elif named is None:
            gate.text += answer
    incomplete = reason == "length"
    if thinking is not None:
        usage.reasoning_tokens = state.parsers.reasoning_tokens(answer_ids)
    for line in reasoning.close(incomplete):
        yield line
    if named is not None:
        named.status = "incomplete" if incomplete else "completed"
        for line in _call_events(output, named, index=output.items.index(named)):
            yield line
        yield reason, tokens
        return
    rest = gate.rest()
    content, calls = parse_tool_output(plan, rest) if gate.buffering or plan.mode != "none" else (rest, [])
    for line in message.add(content or "", final=True):
        yield line
    for line in message.close(incomplete and not calls):
        yield line
    for call in function_items(prepared, calls, incomplete and plan.mode == "named"):
        call.arguments = guard_reply(call.arguments, usage) or ""
        for line in _call_events(output, call):
            yield line
    yield reason, tokens


async def stream_response(state: ServerState, request: CreateResponseRequest, usage: UsageRecord,
                          owner: int | None) -> AsyncIterator[str]:
    """Validate and start the request (errors raise before the stream starts), then yield SSE events."""
    prepared = await prepare(state, request, usage, owner)

    async def events() -> AsyncIterator[str]:
        event = _Events()
        yield event("response.created", response=prepared.response)
        yield event("response.in_progress", response=prepared.response)
        output = _Output(event)
        error: APIError | None = None
        reason, tokens = None, 0
        try:
            async for line in _generate(state, prepared, usage, output):
                if isinstance(line, str):
                    yield line
                else:
                    reason, tokens = line
        except APIError as err:
            error = err
        except Exception:
            logger.exception("response stream failed")
            error = APIError("The server had an error while processing your request.", 500, "server_error",
                             code="server_error")
        if error is not None:
            usage.error_type = error.type
            tokens = usage.completion_tokens
        response = finish(prepared, output.items, reason, tokens, error, usage.reasoning_tokens)
        await save(state, prepared, response)
        yield event(f"response.{response.status}", response=response)

    return events()
