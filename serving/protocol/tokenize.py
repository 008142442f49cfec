"""Nexus-K extensions: ``POST /tokenize`` and ``POST /detokenize`` (as vLLM's)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from serving.protocol.chat import ChatMessage
from serving.protocol.common import RequestModel, ResponseModel


class TokenizeRequest(RequestModel):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` or `messages`")
        return self


class TokenizeResponse(ResponseModel):
    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeRequest(RequestModel):
    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0)]]


class DetokenizeResponse(ResponseModel):
    prompt: str
