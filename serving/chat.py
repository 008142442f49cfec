"""Chat requests to token ids and back: chat templates, response formats and tool calls. No HTTP here."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from nexus_k.core.chat_templates import chat_to_ids, content_text
from serving.engines.base import StructuredOutput
from serving.protocol import ChatCompletionRequest, NamedToolChoice, ResponseFunctionCall, ResponseToolCall

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"


class ChatTemplateError(ValueError):
    """The model has no usable chat template, or the messages do not fit it."""


def transcript(messages: list[Any]) -> str:
    """Messages as readable ``role: text`` lines (for the audit log)."""
    return "\n".join(f"{m.role}: {content_text(m.content) or ''}" for m in messages)


def messages_to_dicts(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The request's messages as plain dicts for ``apply_chat_template`` (developer maps to system)."""
    out: list[dict[str, Any]] = []
    for message in request.messages:
        item: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role,
                                "content": content_text(message.content)}
        if message.role == "assistant" and message.tool_calls:
            item["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.function.name, "arguments": c.function.arguments}}
                for c in message.tool_calls
            ]
        if message.role == "tool":
            item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                  add_generation_prompt: bool = True) -> list[int]:
    """Apply the tokenizer's chat template and return token ids."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            "this model's tokenizer has no chat template; use /v1/completions, or serve a model whose "
            "tokenizer_config.json has a `chat_template` (`nexus-k tokenizer train` writes one)"
        )
    try:
        return chat_to_ids(tokenizer, messages, tools=tools, add_generation_prompt=add_generation_prompt)
    except Exception as err:  # jinja raises TemplateError subclasses and plain exceptions alike
        raise ChatTemplateError(f"the chat template rejected these messages: {err}") from err


@dataclass
class ToolPlan:
    """How a chat request's tools shape generation and how the output turns back into tool calls."""

    mode: str
    """"none": plain text; "auto": parse <tool_call> tags; "required": JSON list of calls; "named": one call."""
    structured: StructuredOutput | None = None
    named_function: str | None = None


def _required_schema(request: ChatCompletionRequest) -> dict[str, Any]:
    variants = []
    for tool in request.tools or []:
        params = tool.function.parameters or {"type": "object"}
        variants.append({
            "type": "object",
            "properties": {"name": {"const": tool.function.name}, "arguments": params},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    max_items = None if request.parallel_tool_calls is not False else 1
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": variants}}
    if max_items:
        schema["maxItems"] = max_items
    return schema


def plan_output(request: ChatCompletionRequest) -> ToolPlan:
    """Decide the structured-output constraint for a chat request (response_format or tool_choice)."""
    choice = request.tool_choice
    if request.tools and isinstance(choice, NamedToolChoice):
        tool = next(t for t in request.tools if t.function.name == choice.function.name)
        schema = tool.function.parameters or {"type": "object"}
        return ToolPlan("named", StructuredOutput(json_schema=schema), tool.function.name)
    if request.tools and choice == "required":
        return ToolPlan("required", StructuredOutput(json_schema=_required_schema(request)))
    fmt = request.response_format
    structured = None
    if fmt is not None and fmt.type == "json_object":
        structured = StructuredOutput(json_object=True)
    elif fmt is not None and fmt.type == "json_schema":
        structured = StructuredOutput(json_schema=fmt.json_schema.schema_ or {"type": "object"})
    mode = "auto" if request.tools and choice in (None, "auto") else "none"
    return ToolPlan(mode, structured)


def new_tool_call_id() -> str:
    """An OpenAI-style tool call id."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _call(name: str, arguments: Any) -> ResponseToolCall:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return ResponseToolCall(id=new_tool_call_id(), function=ResponseFunctionCall(name=name, arguments=args))


def parse_tool_output(plan: ToolPlan, text: str) -> tuple[str | None, list[ResponseToolCall]]:
    """Split generated text into (content, tool calls) according to the plan."""
    if plan.mode == "named":
        return None, [_call(plan.named_function or "", text)]
    if plan.mode == "required":
        try:
            calls = json.loads(text)
        except json.JSONDecodeError:
            return text, []
        return None, [_call(c["name"], c["arguments"]) for c in calls]
    if plan.mode == "auto" and TOOL_CALL_OPEN in text:
        return _parse_tagged_calls(text)
    return text, []


def _parse_tagged_calls(text: str) -> tuple[str | None, list[ResponseToolCall]]:
    """Hermes-style ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks."""
    calls: list[ResponseToolCall] = []
    content, rest = text.split(TOOL_CALL_OPEN, 1)
    for block in (TOOL_CALL_OPEN + rest).split(TOOL_CALL_OPEN)[1:]:
        body = block.split(TOOL_CALL_CLOSE, 1)[0].strip()
        try:
            data = json.loads(body)
            calls.append(_call(data["name"], data.get("arguments", {})))
        except (json.JSONDecodeError, KeyError, TypeError):
            return text, []  # not a well-formed call: hand the text back unchanged
    return (content.strip() or None), calls


def held_back_suffix(text: str) -> int:
    """How many trailing characters of streamed text could be the start of a ``<tool_call>`` tag."""
    for size in range(min(len(TOOL_CALL_OPEN) - 1, len(text)), 0, -1):
        if TOOL_CALL_OPEN.startswith(text[-size:]):
            return size
    return 0
