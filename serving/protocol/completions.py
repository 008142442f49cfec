"""Completions (legacy, ``POST /v1/completions``)."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import Field, field_validator

from serving.protocol.chat import SamplingFields, Usage
from serving.protocol.common import ResponseModel

Prompt = str | list[str] | Annotated[list[int], Field(min_length=1)] | list[Annotated[list[int], Field(min_length=1)]]


class CompletionRequest(SamplingFields):
    model: str
    prompt: Prompt
    best_of: int | None = Field(None, ge=1, le=1)
    echo: bool | None = False
    logprobs: int | None = Field(None, ge=0, le=20)
    max_tokens: int | None = Field(16, ge=0)
    suffix: str | None = None

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix (fill-in-the-middle) is not supported by this server")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_nonempty(cls, value: Prompt) -> Prompt:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        return value


class CompletionLogprobs(ResponseModel):
    text_offset: list[int]
    token_logprobs: list[float | None]
    tokens: list[str]
    top_logprobs: list[dict[str, float] | None]


class CompletionChoice(ResponseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length", "content_filter"] | None


class Completion(ResponseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
