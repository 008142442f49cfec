"""Operational routes: health, Prometheus metrics, tokenize / detokenize, version."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from nexus_k import __version__
from serving.chat import ChatTemplateError, render_prompt
from serving.errors import APIError, validation_message
from serving.protocol import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from serving.routes.openai import StateDep

router = APIRouter()


@router.get("/health")
async def health(state: StateDep) -> dict[str, str]:
    """200 while the server can take requests."""
    return {"status": "ok", "model": state.served_model_name}


@router.get("/version")
async def version() -> dict[str, str]:
    """The Nexus-K version."""
    return {"version": __version__}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: StateDep) -> Response:
    """Prometheus metrics: requests, tokens, TTFT, inter-token and end-to-end latency, engine load."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, state: StateDep) -> TokenizeResponse:
    """Token ids of a prompt, or of chat messages after the chat template."""
    if body.model is not None:
        state.resolve_model(body.model)
    if body.messages is not None:
        from serving.chat import messages_to_dicts
        from serving.protocol import ChatCompletionRequest

        try:
            request = ChatCompletionRequest(model=body.model or state.served_model_name, messages=body.messages)
        except ValidationError as err:  # e.g. an empty list: the chat rules apply to `messages` here too
            message, _ = validation_message(err.errors())
            raise APIError(message, param="messages") from err
        try:
            ids = render_prompt(state.tokenizer, messages_to_dicts(request), None, body.add_generation_prompt)
        except ChatTemplateError as err:
            raise APIError(str(err), param="messages") from err
    else:
        ids = list(state.tokenizer(body.prompt, add_special_tokens=body.add_special_tokens).input_ids)
    return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=state.engine.max_model_len)


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, state: StateDep) -> DetokenizeResponse:
    """Text of token ids."""
    if body.model is not None:
        state.resolve_model(body.model)
    vocab = len(state.tokenizer)
    if any(t >= vocab for t in body.tokens):
        raise APIError(f"token ids must be in [0, {vocab})", param="tokens")
    return DetokenizeResponse(prompt=state.tokenizer.decode(body.tokens))
