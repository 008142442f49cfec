"""``POST /v1/responses`` with ``stream: true``: OpenAI's typed events, each with a ``sequence_number``.

``response.created``, ``response.in_progress``; per output item ``response.output_item.added``, for a message
(or a reasoning model's thinking) ``response.content_part.added``, ``response.output_text.delta``/``.done``
(``response.reasoning_text.delta``/``.done``), ``response.content_part.done``, for a function call
``response.function_call_arguments.delta``/``.done``; ``response.output_item.done``; last
``response.completed``, ``response.incomplete`` (cut by ``max_output_tokens``) or ``response.failed``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from serving.chat import TOOL_CALL_OPEN, ToolPlan, held_back_suffix, new_tool_call_id, parse_tool_output
from serving.errors import APIError
from serving.generation import stream_jobs
from serving.handlers.file_search import search_events
from serving.handlers.responses import (
    Prepared,
    finish,
    function_items,
    output_logprobs,
    prepare,
    save,
)
from serving.handlers.responses_events import Events, Output, TextItem, call_events
from serving.protocol.responses import (
    CreateResponseRequest,
    FunctionToolCall,
    response_id,
)
from serving.security.pii_guard import guard_reply
from serving.state import ServerState
from serving.usage import UsageRecord

logger = logging.getLogger(__name__)

FINAL_EVENTS = ("event: response.completed\n", "event: response.incomplete\n", "event: response.failed\n")


def is_final_event(event: str) -> bool:
    """Whether ``event`` ends a Responses stream (the usage record is committed before it goes out)."""
    return event.startswith(FINAL_EVENTS)


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
                    output: Output) -> AsyncIterator[str | tuple[str | None, int]]:
    """Output events as the engine produces them, then ``(finish reason, output tokens)``; the items are in
    ``output.items``."""
    plan, event = prepared.plan, output.event
    thinking = state.parsers.reasoning_stream() if state.parsers is not None and state.parsers.reasons else None
    reasoning = TextItem(output, usage, reasoning=True)
    gate, message = _TextGate(plan), TextItem(output, usage)
    if prepared.search is not None:
        message.annotate = prepared.search.annotations
    named: FunctionToolCall | None = None
    if plan.mode == "named" and usage.pii_guard == "off":  # the whole answer is the arguments: stream them
        named = FunctionToolCall(id=response_id("fc"), call_id=new_tool_call_id(),
                                 name=plan.named_function or "", arguments="", status="in_progress")
        named_index = output.next_index()  # 0, or 1 after a file_search_call item
        output.items.append(named)
        yield event("response.output_item.added", output_index=named_index, item=named)
    tokens, reason, token_ids = 0, None, []
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
        token_ids += delta.token_ids
        if named is not None and answer:
            named.arguments += answer
            yield event("response.function_call_arguments.delta", item_id=named.id,
                        output_index=output.items.index(named), delta=answer)
        elif named is None and plan.mode != "named":
            for line in message.add(gate.visible(answer), output_logprobs(state, prepared, delta.logprobs)):
                yield line
        elif named is None:
            gate.text += answer
    incomplete = reason == "length"
    if thinking is not None:
        usage.reasoning_tokens = state.parsers.reasoning_tokens(token_ids)
    for line in reasoning.close(incomplete):
        yield line
    if named is not None:
        named.status = "incomplete" if incomplete else "completed"
        for line in call_events(output, named, index=output.items.index(named)):
            yield line
        yield reason, tokens
        return
    rest = gate.rest()
    content, calls = parse_tool_output(plan, rest) if gate.buffering or plan.mode != "none" else (rest, [])
    for line in message.add(content or "", final=True, keep_blank=not calls):
        yield line
    for line in message.close(incomplete and not calls):
        yield line
    for call in function_items(prepared, calls, incomplete and plan.mode == "named"):
        call.arguments = guard_reply(call.arguments, usage) or ""
        for line in call_events(output, call):
            yield line
    yield reason, tokens


async def stream_response(state: ServerState, request: CreateResponseRequest, usage: UsageRecord,
                          owner: int | None) -> AsyncIterator[str]:
    """Validate and start the request (errors raise before the stream starts), then yield SSE events."""
    prepared = await prepare(state, request, usage, owner)

    async def events() -> AsyncIterator[str]:
        event = Events()
        yield event("response.created", response=prepared.response)
        yield event("response.in_progress", response=prepared.response)
        output = Output(event)
        if prepared.search is not None:
            for line in search_events(event, prepared.search, output.next_index()):
                yield line
            output.items.append(prepared.search.item)
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
        try:
            await save(state, prepared, response)
        except Exception:  # the answer was streamed: end it with a failure the client can read
            logger.exception("could not store response %s", response.id)
            error = APIError("The response could not be stored.", 500, "server_error", code="server_error")
            usage.error_type = error.type
            response = finish(prepared, output.items, reason, tokens, error, usage.reasoning_tokens)
        yield event(f"response.{response.status}", response=response)

    return events()
