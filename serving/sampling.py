"""OpenAI sampling fields to the engine's ``SamplingSettings`` (shared by chat and text completions)."""

from __future__ import annotations

from serving.engines.base import SamplingSettings, StructuredOutput, context_length_message
from serving.errors import APIError
from serving.protocol import SamplingFields


def context_error(prompt_tokens: int, max_tokens: int, max_model_len: int) -> APIError:
    """400 for a request that does not fit the context window (OpenAI's wording and code)."""
    return APIError(context_length_message(prompt_tokens, max_tokens, max_model_len), 400, param="messages",
                    code="context_length_exceeded")


def check_token_ids(ids: list[int], vocab_size: int, param: str) -> None:
    """400 unless every id is a token of this model's vocabulary."""
    if any(not 0 <= t < vocab_size for t in ids):
        raise APIError(f"{param} must be token ids in [0, {vocab_size})", param=param)


def resolve_max_tokens(requested: int | None, prompt_tokens: int, max_model_len: int) -> int:
    """The completion budget: as asked, or whatever the context leaves; 400 if it cannot fit."""
    room = max_model_len - prompt_tokens
    if requested is None:
        if room < 1:
            raise context_error(prompt_tokens, 1, max_model_len)
        return room
    if requested > room:
        raise context_error(prompt_tokens, requested, max_model_len)
    return requested


def to_sampling_settings(
    fields: SamplingFields,
    max_tokens: int,
    *,
    logprobs: int | None,
    prompt_logprobs: int | None = None,
    structured: StructuredOutput | None = None,
    choice_index: int = 0,
) -> SamplingSettings:
    """Engine settings for choice ``choice_index`` of a request (seeded choices get distinct seeds)."""
    seed = None if fields.seed is None else (fields.seed + choice_index) % (2**63)
    if (fields.min_tokens or 0) > max_tokens:
        raise APIError(f"min_tokens ({fields.min_tokens}) must not exceed max_tokens ({max_tokens})",
                       param="min_tokens")
    return SamplingSettings(
        max_tokens=max_tokens,
        temperature=1.0 if fields.temperature is None else fields.temperature,
        top_p=1.0 if fields.top_p is None else fields.top_p,
        top_k=max(0, fields.top_k or 0),
        min_tokens=fields.min_tokens or 0,
        seed=seed,
        presence_penalty=fields.presence_penalty or 0.0,
        frequency_penalty=fields.frequency_penalty or 0.0,
        repetition_penalty=fields.repetition_penalty or 1.0,
        stop=fields.stop_list(),
        logit_bias={int(t): float(b) for t, b in (fields.logit_bias or {}).items()},
        stop_token_ids=list(fields.stop_token_ids or []),
        ignore_eos=bool(fields.ignore_eos),
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        structured=structured,
    )
