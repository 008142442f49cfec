"""The Responses API (``/v1/responses``), in the order of OpenAI's API reference.

Request bodies forbid unknown top-level fields, as OpenAI does; input items and content parts ignore unknown
keys, because clients replay whole output items (``id``, ``status``, ``annotations``, ...) as the next input.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from serving.protocol.common import RequestModel, ResponseModel
from serving.protocol.vector_stores import Filter, RankingOptions


def response_id(prefix: str) -> str:
    """An id in the Responses API's style: ``resp_<hex>``, ``msg_<hex>``, ``fc_<hex>``."""
    return f"{prefix}_{secrets.token_hex(24)}"


class InputModel(BaseModel):
    """Base for input items and parts: unknown keys ignored (replayed output items carry extra fields)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, protected_namespaces=())


# ------------------------------------------------------------------------------------ Input content parts


class InputTextPart(InputModel):
    type: Literal["input_text"]
    text: str


class OutputTextPart(InputModel):
    type: Literal["output_text"]
    text: str


class RefusalPart(InputModel):
    type: Literal["refusal"]
    refusal: str


class InputMediaPart(InputModel):
    """An image, file or audio part: accepted by the schema so that the handler can say it is text-only."""

    type: Literal["input_image", "input_file", "input_audio"]


ContentPart = Annotated[InputTextPart | OutputTextPart | RefusalPart | InputMediaPart, Field(discriminator="type")]


# ------------------------------------------------------------------------------------------- Input items

ItemStatus = Literal["in_progress", "completed", "incomplete"]


class InputMessage(InputModel):
    """A message: ``{"role", "content"}`` (the easy form) or the full item with ``type: "message"``."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallItem(InputModel):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallOutputItem(InputModel):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[ContentPart]
    id: str | None = None
    status: ItemStatus | None = None


class ReasoningItem(InputModel):
    """A reasoning item replayed from an earlier output: its ``reasoning_text`` goes to the next assistant turn
    as ``reasoning_content`` (templates that render thinking show it; others ignore it)."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[dict[str, Any]] = Field(default_factory=list)
    content: list[dict[str, Any]] | None = None


class FileSearchCallItem(InputModel):
    """A ``file_search_call`` output item replayed as input: kept in the conversation, not shown to the model
    (the sources it found were part of that turn's prompt only)."""

    type: Literal["file_search_call"]
    id: str | None = None
    queries: list[str] = Field(default_factory=list)
    status: str | None = None
    results: list[dict[str, Any]] | None = None


def _item_kind(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")
    known = ("message", "function_call", "function_call_output", "reasoning", "file_search_call")
    return kind if kind in known else "unsupported"


class UnsupportedItem(InputModel):
    """Any other item type (computer, shell, MCP, item references): the validator names it in a 400."""

    type: str

    @model_validator(mode="after")
    def _refuse(self) -> UnsupportedItem:
        raise ValueError(f"input items of type {self.type!r} are not supported by this server")


InputItem = Annotated[
    Annotated[InputMessage, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[FileSearchCallItem, Tag("file_search_call")]
    | Annotated[UnsupportedItem, Tag("unsupported")],
    Discriminator(_item_kind),
]


_ITEMS: TypeAdapter[list[Any]] = TypeAdapter(list[InputItem])
_TAGS = {"message", "function_call", "function_call_output", "reasoning", "file_search_call", "unsupported"}


def validate_items(value: list[Any]) -> list[Any]:
    """Input items, or a ValueError that names the first bad item and field (``input[2].call_id: ...``)."""
    try:
        return _ITEMS.validate_python(value)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(p) for p in first["loc"]]
        where = f"input[{loc[0]}]" + "".join(f".{p}" for i, p in enumerate(loc[1:]) if not (i == 0 and p in _TAGS))
        raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


# ----------------------------------------------------------------------------------- Tools and formats


class FunctionTool(RequestModel):
    type: Literal["function"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FileSearchTool(RequestModel):
    """OpenAI's hosted ``file_search`` tool, run by this server over its own vector stores."""

    type: Literal["file_search"]
    vector_store_ids: list[str] = Field(min_length=1, max_length=16)
    max_num_results: int | None = Field(None, ge=1, le=50)
    filters: Filter | None = None
    ranking_options: RankingOptions | None = None


Tool = Annotated[FunctionTool | FileSearchTool, Field(discriminator="type")]


class ToolChoiceFunction(RequestModel):
    type: Literal["function"]
    name: str


class TextFormatText(RequestModel):
    type: Literal["text"]


class TextFormatJSONObject(RequestModel):
    type: Literal["json_object"]


class TextFormatJSONSchema(RequestModel):
    type: Literal["json_schema"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[TextFormatText | TextFormatJSONObject | TextFormatJSONSchema, Field(discriminator="type")]


class TextConfig(RequestModel):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class Reasoning(RequestModel):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class StreamOptions(RequestModel):
    include_obfuscation: bool | None = None


# -------------------------------------------------------------------------------------------- Request


class CreateResponseRequest(RequestModel):
    background: bool | None = None
    include: list[str] | None = None
    """``message.output_text.logprobs`` and ``file_search_call.results`` are honoured; others are accepted."""
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    max_tool_calls: int | None = Field(None, ge=1)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    model: str
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    prompt_cache_key: str | None = None
    """Accepted, no effect (the engine's prefix cache needs no key)."""
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    """Accepted, no effect."""
    reasoning: Reasoning | None = None
    safety_identifier: str | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    """Accepted, no effect."""
    store: bool | None = True
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    text: TextConfig | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | None = None
    tools: list[Tool] | None = Field(None, max_length=128)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    truncation: Literal["auto", "disabled"] | None = "disabled"
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _items(cls, value: Any) -> Any:
        return validate_items(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _consistent(self) -> CreateResponseRequest:
        if self.background:
            raise ValueError("background=true is not supported by this server")
        if isinstance(self.input, list) and not self.input and self.previous_response_id is None:
            raise ValueError("input must not be empty")
        if isinstance(self.tool_choice, ToolChoiceFunction) or self.tool_choice == "required":
            names = {t.name for t in self.tools or [] if isinstance(t, FunctionTool)}
            if not names:
                raise ValueError("tool_choice requires `tools`")
            if isinstance(self.tool_choice, ToolChoiceFunction) and self.tool_choice.name not in names:
                raise ValueError(f"tool_choice names a function not in tools: {self.tool_choice.name}")
        return self


# ------------------------------------------------------------------------------------------- Response


class OutputText(ResponseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class OutputMessage(ResponseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[OutputText]


class FunctionToolCall(ResponseModel):
    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


class ReasoningText(ResponseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningOutput(ResponseModel):
    """A reasoning model's thinking (split off by the server's ``--reasoning-parser``)."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[dict[str, Any]] = Field(default_factory=list)
    content: list[ReasoningText]
    status: ItemStatus


class FileSearchResult(ResponseModel):
    file_id: str
    filename: str
    score: float
    text: str
    attributes: dict[str, Any] = Field(default_factory=dict)


class FileSearchCall(ResponseModel):
    """The server's search for the ``file_search`` tool (before the answer that cites it)."""

    id: str
    type: Literal["file_search_call"] = "file_search_call"
    status: Literal["in_progress", "searching", "completed", "incomplete", "failed"]
    queries: list[str]
    results: list[FileSearchResult] | None = None


OutputItem = Annotated[OutputMessage | FunctionToolCall | ReasoningOutput | FileSearchCall,
                       Field(discriminator="type")]


class InputTokensDetails(ResponseModel):
    cached_tokens: int = 0


class OutputTokensDetails(ResponseModel):
    reasoning_tokens: int = 0


class ResponseUsage(ResponseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class ResponseError(ResponseModel):
    code: str
    message: str


class IncompleteDetails(ResponseModel):
    reason: Literal["max_output_tokens", "content_filter"]


ResponseStatus = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]


class Response(ResponseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    status: ResponseStatus
    background: bool = False
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    prompt_cache_key: str | None = None
    reasoning: Reasoning = Field(default_factory=Reasoning)
    safety_identifier: str | None = None
    service_tier: str = "default"
    store: bool = True
    temperature: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_logprobs: int = 0
    top_p: float | None = None
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None


class DeletedResponse(ResponseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


class InputItemList(ResponseModel):
    """``GET /v1/responses/{id}/input_items``: the conversation the response answered, as stored items."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


# ------------------------------------------------------------------------------------- Streaming events
# Each event is a dict with ``type`` and ``sequence_number`` (built by the handler); the SSE line carries
# the type as its ``event:`` name, as OpenAI sends them.
