"""Chat completions (``POST /v1/chat/completions``), in the order of OpenAI's API reference."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from serving.protocol.common import RequestModel, ResponseModel


class MessageModel(RequestModel):
    """Inside messages and content parts unknown keys are ignored, as OpenAI and vLLM do: clients replay
    ``message.model_dump()`` (``annotations``, ``audio``, ``function_call``), send ``cache_control`` on parts
    and ``name`` on tool messages. Unknown top-level parameters stay an error."""

    model_config = ConfigDict(extra="ignore")


class TextContentPart(MessageModel):
    type: Literal["text"]
    text: str


class MediaContentPart(MessageModel):
    """An image, audio or file part: refused with a clear 400, since the models served here read text only."""

    type: Literal["image_url", "input_audio", "file"]

    @model_validator(mode="after")
    def _text_only(self) -> MediaContentPart:
        raise ValueError(f"this model reads text only: `{self.type}` content parts are not supported")


ContentPart = Annotated[TextContentPart | MediaContentPart, Field(discriminator="type")]


class FunctionCall(MessageModel):
    name: str
    arguments: str


class ToolCall(MessageModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(MessageModel):
    role: Literal["system", "developer"]
    content: str | list[ContentPart]
    name: str | None = None


class UserMessage(MessageModel):
    role: Literal["user"]
    content: str | list[ContentPart]
    name: str | None = None


class AssistantMessage(MessageModel):
    role: Literal["assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None
    """Legacy: one call, as ``functions`` clients replay it."""
    # --- Nexus-K extensions (as in vLLM): a reasoning model's thinking, replayed in history
    reasoning_content: str | None = None
    reasoning: str | None = None

    @model_validator(mode="after")
    def _content_or_calls(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls and self.function_call is None:
            raise ValueError("an assistant message needs `content` or `tool_calls`")
        return self


class ToolMessage(MessageModel):
    role: Literal["tool"]
    content: str | list[ContentPart]
    tool_call_id: str


class FunctionMessage(MessageModel):
    """Legacy: the result of a ``function_call``."""

    role: Literal["function"]
    content: str | None
    name: str


ChatMessage = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
                        Field(discriminator="role")]


class FunctionDefinition(RequestModel):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(RequestModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(RequestModel):
    name: str


class NamedToolChoice(RequestModel):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(RequestModel):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(RequestModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs a `json_schema` object")
        return self


class StreamOptions(RequestModel):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


MAX_STOP = 64
"""OpenAI takes 4 stop strings; clients such as Continue send their whole list, so we take up to 64."""
Stop = str | Annotated[list[str], Field(max_length=MAX_STOP)] | None


class SamplingFields(RequestModel):
    """Sampling fields shared by chat and text completions (OpenAI's names and ranges)."""

    frequency_penalty: float | None = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(0.0, ge=-2.0, le=2.0)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stop: Stop = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    user: str | None = None
    n: int | None = Field(1, ge=1, le=128)
    logit_bias: dict[str, float] | None = None
    # --- Nexus-K extensions (as in vLLM): send through the client's `extra_body`
    top_k: int | None = Field(None, ge=-1, le=100_000)
    """Sample from the k most likely tokens only (0 or -1: off)."""
    min_tokens: int | None = Field(None, ge=0)
    """Generate at least this many tokens before EOS or a stop string may end the reply."""
    repetition_penalty: float | None = Field(None, ge=0.01, le=10.0)
    """Divide (multiply, if negative) the logits of tokens already seen; 1 is off. Below 0.01 logits overflow."""
    ignore_eos: bool | None = None
    stop_token_ids: Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=256)] | None = None
    """Token ids that end the reply (each a token of the model's vocabulary; the server checks the bound)."""

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias_range(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not token.isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {token!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"logit_bias values must be between -100 and 100, got {bias}")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_nonempty(cls, value: Stop) -> Stop:
        if (isinstance(value, list) and any(s == "" for s in value)) or value == "":
            raise ValueError("stop sequences must not be empty")
        return value

    def stop_list(self) -> list[str]:
        """Stop strings as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


class ChatCompletionRequest(SamplingFields):
    """Every parameter of OpenAI's reference is accepted. Honoured beyond sampling: ``logit_bias``,
    ``reasoning_effort`` (the chat template's thinking switch), ``safety_identifier`` / ``user`` (the audit
    row's end user), legacy ``functions`` / ``function_call`` (as tools). Accepted and without effect here
    (docs/api.md): ``service_tier``, ``prompt_cache_key`` and ``prompt_cache_retention`` (prefix caching needs
    no key), ``verbosity``, ``prediction``, ``store`` and ``metadata`` (chat completions are not stored).
    Refused with a 400: ``audio`` / audio ``modalities`` and ``web_search_options``."""

    messages: list[ChatMessage] = Field(min_length=1)
    model: str
    audio: dict[str, Any] | None = None
    function_call: Literal["none", "auto"] | NamedFunction | None = None
    functions: list[FunctionDefinition] | None = Field(None, max_length=128)
    logprobs: bool | None = False
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    metadata: dict[str, str] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    parallel_tool_calls: bool | None = None
    prediction: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    reasoning_effort: ReasoningEffort | None = None
    response_format: ResponseFormat | None = None
    safety_identifier: str | None = Field(None, max_length=256)
    service_tier: str | None = None
    store: bool | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    tools: list[Tool] | None = Field(None, max_length=128)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    verbosity: Literal["low", "medium", "high"] | None = None
    web_search_options: dict[str, Any] | None = None
    # --- Nexus-K extensions (as in vLLM): send through the client's `extra_body`
    chat_template_kwargs: dict[str, Any] | None = None
    """Extra variables for the chat template (e.g. ``{"enable_thinking": false}``)."""

    def _map_legacy_functions(self) -> None:
        """``functions`` / ``function_call`` as ``tools`` / ``tool_choice``."""
        if self.tools:
            raise ValueError("give `tools` or the legacy `functions`, not both")
        self.tools = [Tool(type="function", function=f) for f in self.functions or []]
        if isinstance(self.function_call, NamedFunction):
            self.tool_choice = NamedToolChoice(type="function", function=self.function_call)
        elif self.function_call is not None:
            self.tool_choice = self.function_call

    def end_user(self) -> str | None:
        """Who the request is for: ``safety_identifier``, else the older ``user``."""
        return self.safety_identifier or self.user

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        if self.audio is not None or (self.modalities and "audio" in self.modalities):
            raise ValueError("audio output is not supported: the models served here answer in text")
        if self.web_search_options is not None:
            raise ValueError("web_search_options is not supported: this server does not search the web")
        if self.functions is not None or self.function_call is not None:
            self._map_legacy_functions()
        if isinstance(self.tool_choice, NamedToolChoice) or self.tool_choice == "required":
            names = {t.function.name for t in self.tools or []}
            if not names:
                raise ValueError("tool_choice requires `tools`")
            if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
                raise ValueError(f"tool_choice names a function not in tools: {self.tool_choice.function.name}")
        return self


class TopLogprob(ResponseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(ResponseModel):
    content: list[ChatTokenLogprob] | None
    refusal: list[ChatTokenLogprob] | None = None


class ResponseFunctionCall(ResponseModel):
    name: str
    arguments: str


class ResponseToolCall(ResponseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseFunctionCall


class ChatCompletionMessage(ResponseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ResponseToolCall] | None = None
    # --- Nexus-K extensions (as in vLLM): a reasoning model's thinking, under both names clients read
    reasoning_content: str | None = None
    reasoning: str | None = None


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class ChatChoice(ResponseModel):
    index: int
    message: ChatCompletionMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason


class CompletionTokensDetails(ResponseModel):
    reasoning_tokens: int = 0


class Usage(ResponseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = None


class ChatCompletion(ResponseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None
    service_tier: str | None = None


class ChunkToolCallFunction(ResponseModel):
    name: str | None = None
    arguments: str | None = None


class ChunkToolCall(ResponseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ChunkToolCallFunction


class ChunkDelta(ResponseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChunkToolCall] | None = None
    # --- Nexus-K extensions (as in vLLM)
    reasoning_content: str | None = None
    reasoning: str | None = None


class ChunkChoice(ResponseModel):
    index: int
    delta: ChunkDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(ResponseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
