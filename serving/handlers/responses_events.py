"""The output items of a streamed response and the typed events that build them (``responses_stream``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from serving.handlers.responses import message_item, reasoning_item
from serving.handlers.sse import event_json
from serving.protocol.responses import FunctionToolCall, OutputItem, OutputText, response_id
from serving.security.pii_guard import ReplyGuard
from serving.usage import UsageRecord


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


class Events:
    """Numbers events and writes them as SSE lines named by their type."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **{k: _dump(v) for k, v in fields.items()}}
        self.sequence += 1
        return f"event: {kind}\ndata: {event_json(payload)}\n\n"


class Output:
    """The output items as they stream: their events, in order, and the finished items."""

    def __init__(self, event: Events) -> None:
        self.event = event
        self.items: list[OutputItem] = []

    def next_index(self) -> int:
        """The output index of the item being opened."""
        return len(self.items)


class TextItem:
    """A message (``output_text``) or a reasoning item (``reasoning_text``) as it streams: opened once its
    text is more than whitespace, masked by the PII guard as it goes."""

    def __init__(self, output: Output, usage: UsageRecord, reasoning: bool = False) -> None:
        self.output, self.event, self.reasoning = output, output.event, reasoning
        self.id = response_id("rs" if reasoning else "msg")
        self.guard = ReplyGuard(usage)
        self.text = self.pending = ""
        self.index: int | None = None
        self.closed = False
        self.logprobs: list[dict] = []
        self.pending_logprobs: list[dict] = []
        self.annotate: Callable[[str], list[dict]] | None = None
        """Annotations of the finished text (``file_citation`` of a ``file_search``), sent before it closes."""

    @property
    def kind(self) -> str:
        """The content part's type."""
        return "reasoning_text" if self.reasoning else "output_text"

    def add(self, piece: str, logprobs: list[dict] | None = None, final: bool = False,
            keep_blank: bool = False) -> list[str]:
        """Events for ``piece`` of visible text (``logprobs``: of the tokens since the last call; they go out
        with the next text shown); ``final``: the guard lets go of what it held back; ``keep_blank``: a reply
        of whitespace only is still a message (none when a tool call follows)."""
        if self.closed:
            return []
        self.pending += self.guard.feed(piece) + (self.guard.flush() if final else "")
        self.pending_logprobs += logprobs or []
        if not self.pending or (self.index is None and not self.pending.strip() and not keep_blank):
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
            if self.annotate is not None:
                item.content[0].annotations = annotations = self.annotate(self.text)
                out += [self.event("response.output_text.annotation.added", **where, annotation_index=number,
                                   annotation=annotation) for number, annotation in enumerate(annotations)]
            out.append(self.event("response.output_text.done", **where, text=self.text, logprobs=self.logprobs))
        out += [self.event("response.content_part.done", **where, part=item.content[0]),
                self.event("response.output_item.done", output_index=self.index, item=item)]
        return out


def call_events(output: Output, call: FunctionToolCall, index: int | None = None) -> list[str]:
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
