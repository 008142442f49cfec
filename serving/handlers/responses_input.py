"""Responses API input to a chat conversation: items normalised for storage, then chat messages and tools.

The Responses request becomes a ``ChatCompletionRequest`` so that chat templates, tool planning and tool-call
parsing (``serving.chat``) are the ones chat completions use.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from serving.errors import APIError, validation_message
from serving.protocol import ChatCompletionRequest
from serving.protocol.responses import (
    CreateResponseRequest,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputMediaPart,
    InputMessage,
    ReasoningItem,
    TextFormatJSONObject,
    TextFormatJSONSchema,
    ToolChoiceFunction,
    response_id,
)
from serving.security.pii_guard import guard_prompt_texts
from serving.usage import UsageRecord


def _parts(content: str | list[Any], role: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
    for part in content:
        if isinstance(part, InputMediaPart):
            raise APIError(f"this model reads text only: `{part.type}` content is not supported", param="input")
    return [part.model_dump(exclude_none=True) for part in content]


def _normalise(item: BaseModel | str) -> dict[str, Any]:
    """One input item in the stored form ``input_items`` lists (an id and a status on every item)."""
    if isinstance(item, InputMessage):
        return {"id": item.id or response_id("msg"), "type": "message", "role": item.role,
                "status": item.status or "completed", "content": _parts(item.content, item.role)}
    if isinstance(item, FunctionCallItem):
        return {"id": item.id or response_id("fc"), "type": "function_call", "call_id": item.call_id,
                "name": item.name, "arguments": item.arguments, "status": item.status or "completed"}
    if isinstance(item, FunctionCallOutputItem):
        output = item.output if isinstance(item.output, str) else _parts(item.output, "tool")
        return {"id": item.id or response_id("fco"), "type": "function_call_output", "call_id": item.call_id,
                "output": output, "status": item.status or "completed"}
    if not isinstance(item, ReasoningItem):  # a replayed file_search_call: kept, not shown to the model
        return item.model_dump(exclude_none=True) | {"id": item.id or response_id("fs")}
    out = {"id": item.id or response_id("rs"), "type": "reasoning", "summary": item.summary}
    if item.content:
        out["content"] = item.content
    return out


def new_input_items(request: CreateResponseRequest) -> list[dict[str, Any]]:
    """The request's ``input`` as stored items (a string is one user message)."""
    if isinstance(request.input, str):
        return [_normalise(InputMessage(role="user", content=request.input))]
    return [_normalise(item) for item in request.input]


def guard_input(items: list[dict[str, Any]], instructions: str | None, usage: UsageRecord) -> str | None:
    """Apply the organisation's PII guard to the texts of new input items (in place, so that what is stored is
    what the model saw) and to ``instructions``, which it returns; ``block`` mode raises ``pii_detected``."""
    if usage.pii_guard == "off":
        return instructions
    slots: list[tuple[Any, Any]] = []  # (container, key) holding each text
    for item in items:
        parts = item.get("content") if item["type"] == "message" else item.get("output")
        if isinstance(parts, str):
            slots.append((item, "output"))
        for part in parts if isinstance(parts, list) else []:
            key = "refusal" if part.get("type") == "refusal" else "text"
            if isinstance(part.get(key), str):
                slots.append((part, key))
    texts = [container[key] for container, key in slots] + ([instructions] if instructions else [])
    guarded = guard_prompt_texts(texts, usage, "input")
    for (container, key), text in zip(slots, guarded, strict=False):
        container[key] = text
    return guarded[-1] if instructions else None


def check_call_ids(items: list[dict[str, Any]]) -> None:
    """400 when a ``function_call_output`` answers no ``function_call`` before it in the conversation."""
    seen: set[str] = set()
    for item in items:
        if item["type"] == "function_call":
            seen.add(item["call_id"])
        elif item["type"] == "function_call_output" and item["call_id"] not in seen:
            raise APIError(f"No tool call found for function call output with call_id {item['call_id']}.",
                           param="input")


def _text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or part.get("refusal") or "" for part in content)


def items_to_messages(items: list[dict[str, Any]], instructions: str | None) -> list[dict[str, Any]]:
    """Chat messages for the conversation: leading system/developer text merged into one system message
    (templates render only the first), consecutive function calls into one assistant turn."""
    system = [instructions] if instructions else []
    messages: list[dict[str, Any]] = []
    thinking = ""
    for item in items:
        kind = item["type"]
        if kind == "reasoning":
            thinking += "".join(p.get("text", "") for p in item.get("content") or [] if isinstance(p, dict))
        elif kind == "message" and item["role"] in ("system", "developer") and not messages:
            system.append(_text(item["content"]))
        elif kind == "message":
            messages.append({"role": item["role"], "content": _text(item["content"])})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and (last.get("tool_calls") or not last["content"]):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _text(item["output"])})
        if thinking and kind in ("message", "function_call") and messages[-1]["role"] == "assistant":
            messages[-1]["reasoning_content"], thinking = thinking, ""
    if system:
        messages.insert(0, {"role": "system", "content": "\n\n".join(system)})
    return messages


def _response_format(request: CreateResponseRequest) -> dict[str, Any] | None:
    fmt = request.text.format if request.text else None
    if isinstance(fmt, TextFormatJSONObject):
        return {"type": "json_object"}
    if isinstance(fmt, TextFormatJSONSchema):
        return {"type": "json_schema", "json_schema": {"name": fmt.name, "schema": fmt.schema_,
                                                       "description": fmt.description, "strict": fmt.strict}}
    return None


def to_chat_request(request: CreateResponseRequest, messages: list[dict[str, Any]]) -> ChatCompletionRequest:
    """The equivalent chat request (tools, tool choice, format, sampling); its validation errors become 400s
    naming the Responses parameter."""
    tools = [{"type": "function", "function": t.model_dump(exclude_none=True, exclude={"type"})}
             for t in request.tools or [] if isinstance(t, FunctionTool)]
    choice: Any = request.tool_choice
    if isinstance(choice, ToolChoiceFunction):
        choice = {"type": "function", "function": {"name": choice.name}}
    fields = {"model": request.model, "messages": messages, "tools": tools or None, "tool_choice": choice,
              "parallel_tool_calls": request.parallel_tool_calls, "response_format": _response_format(request),
              "temperature": request.temperature, "top_p": request.top_p,
              "reasoning_effort": request.reasoning.effort if request.reasoning else None}
    try:
        return ChatCompletionRequest.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as err:
        message, param = validation_message(err.errors())
        if param and param.startswith("messages"):
            message, param = message.replace(param, "input", 1), "input"
        elif param == "response_format" or (param or "").startswith("response_format."):
            param = "text.format"
        raise APIError(message, param=param) from err
