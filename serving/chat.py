"""Chat requests to token ids and back: chat templates, response formats and tool calls. No HTTP here."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from nexus_k.core.chat_templates import chat_to_ids, content_text
from serving.engines.base import StructuredOutput
from serving.protocol import (
    ChatCompletionRequest,
    NamedToolChoice,
    ResponseFunctionCall,
    ResponseToolCall,
    ToolCall,
)

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"


class ChatTemplateError(ValueError):
    """The model has no usable chat template, or the messages do not fit it."""


def transcript(messages: list[Any]) -> str:
    """Messages as readable ``role: text`` lines (for the audit log)."""
    return "\n".join(f"{m.role}: {content_text(m.content) or ''}" for m in messages)


def messages_to_dicts(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The request's messages as plain dicts for ``apply_chat_template``: developer maps to system, legacy
    function calls and results to tool calls and tool messages, a reasoning model's replayed thinking kept as
    ``reasoning_content`` for templates that render it."""
    out: list[dict[str, Any]] = []
    for message in request.messages:
        role = {"developer": "system", "function": "tool"}.get(message.role, message.role)
        item: dict[str, Any] = {"role": role, "content": content_text(message.content)}
        if message.role == "assistant":
            calls = list(message.tool_calls or [])
            if message.function_call is not None:
                calls.append(ToolCall(id=new_tool_call_id(), function=message.function_call))
            if calls:
                item["tool_calls"] = [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.function.name, "arguments": c.function.arguments}}
                    for c in calls
                ]
            thinking = message.reasoning_content or message.reasoning
            if thinking:
                item["reasoning_content"] = thinking
        if message.role == "tool":
            item["tool_call_id"] = message.tool_call_id
        if message.role == "function":
            item["name"] = message.name
        out.append(item)
    return out


def template_kwargs(request: ChatCompletionRequest) -> dict[str, Any]:
    """Extra chat-template variables: the request's own, and ``reasoning_effort`` as the thinking switch that
    reasoning models' templates read (``enable_thinking``; off for effort none or minimal)."""
    kwargs = dict(request.chat_template_kwargs or {})
    if request.reasoning_effort is not None:
        kwargs.setdefault("enable_thinking", request.reasoning_effort not in ("none", "minimal"))
        kwargs.setdefault("reasoning_effort", request.reasoning_effort)
    return kwargs


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                  add_generation_prompt: bool = True, kwargs: dict[str, Any] | None = None) -> list[int]:
    """Apply the tokenizer's chat template and return token ids."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            "this model's tokenizer has no chat template; use /v1/completions, or serve a model whose "
            "tokenizer_config.json has a `chat_template` (`nexus-k tokenizer train` writes one)"
        )
    try:
        return chat_to_ids(tokenizer, messages, tools=tools, add_generation_prompt=add_generation_prompt,
                           template_kwargs=kwargs)
    except Exception as err:  # jinja raises TemplateError subclasses and plain exceptions alike
        raise ChatTemplateError(f"the chat template rejected these messages: {err}") from err


@dataclass
class ToolPlan:
    """How a chat request's tools shape generation and how the output turns back into tool calls."""

    mode: str
    """"none": plain text; "auto": parse the model's tool-call format; "required": JSON list; "named": one call."""
    structured: StructuredOutput | None = None
    named_function: str | None = None
    tools: list[dict[str, Any]] | None = None
    parsers: Any = None
    """vLLM's parsers (``OutputParsers``) when installed; else only the Hermes format is read."""

    @property
    def holds_back_tags(self) -> bool:
        """Whether streamed text is only held back around a ``<tool_call>`` tag (Hermes) rather than whole
        (other formats are parsed once the reply is complete)."""
        return self.parsers is None or self.parsers.tool_call_parser == "hermes"


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


def plan_output(request: ChatCompletionRequest, parsers: Any = None) -> ToolPlan:
    """Decide the structured-output constraint for a chat request (response_format or tool_choice)."""
    plan = _plan(request)
    plan.tools = [t.model_dump(exclude_none=True) for t in request.tools] if request.tools else None
    plan.parsers = parsers
    return plan


def _plan(request: ChatCompletionRequest) -> ToolPlan:
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
    if mode == "auto" and structured is not None:
        # Either call a tool or answer in the format: one grammar for both, so a tool stays callable.
        structured = StructuredOutput(grammar=_tool_or_format_grammar(request, structured))
    return ToolPlan(mode, structured)


def _tool_or_format_grammar(request: ChatCompletionRequest, answer: StructuredOutput) -> str:
    """EBNF (xgrammar's dialect): one or more ``<tool_call>`` blocks of the tools' schemas, or the answer format."""
    import xgrammar as xgr

    calls = _required_schema(request)
    call = xgr.Grammar.from_json_schema(json.dumps(calls["items"]), any_whitespace=False)
    one_call = xgr.Grammar.concat(xgr.Grammar.from_ebnf(f'root ::= "{TOOL_CALL_OPEN}"'), call,
                                  xgr.Grammar.from_ebnf(f'root ::= "{TOOL_CALL_CLOSE}"'))
    tools = one_call if request.parallel_tool_calls is False else xgr.Grammar.union(
        one_call, xgr.Grammar.concat(one_call, one_call), xgr.Grammar.concat(one_call, one_call, one_call))
    schema = answer.json_schema if answer.json_schema is not None else {"type": "object"}
    return str(xgr.Grammar.union(tools, xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)))


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
    if plan.mode == "auto" and plan.parsers is not None:
        content, calls = plan.parsers.extract_tool_calls(text, plan.tools or [])
        return content, [_call(c.name, c.arguments) for c in calls]
    if plan.mode == "auto" and TOOL_CALL_OPEN in text:
        return _parse_tagged_calls(text)
    return text, []


def _parse_tagged_calls(text: str) -> tuple[str | None, list[ResponseToolCall]]:
    """Hermes-style ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks: the fallback where
    vLLM (and its parsers) is not installed."""
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
