"""The one interface between the HTTP layer and an inference engine.

An engine sees token ids and sampling settings only: no HTTP, no chat messages, no auth. It streams
``GenerationDelta`` objects for one sequence per request (the caller fans out ``n`` itself).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length", "abort"]


class EngineError(Exception):
    """A request the engine cannot serve (bad adapter name, prompt too long...): a client error."""


async def cannot_pool(model: str) -> list[list[float]]:
    """What ``pool`` does on a generation model."""
    raise EngineError(f"{model} is a text generation model: it cannot produce embeddings")


def context_length_message(prompt_tokens: int, completion_tokens: int, max_model_len: int) -> str:
    """OpenAI's wording for a request that does not fit the context window."""
    return (f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + completion_tokens} tokens ({prompt_tokens} in the messages/prompt, "
            f"{completion_tokens} in the completion). Please reduce the length of the messages/prompt or the "
            "completion.")


@dataclass(frozen=True)
class StructuredOutput:
    """Constrain generation to a formal language (enforced by the engine's grammar backend)."""

    json_schema: dict[str, Any] | None = None
    """Output must be JSON valid against this schema."""
    json_object: bool = False
    """Output must be some JSON object (``response_format: json_object``)."""
    choice: list[str] | None = None
    """Output must be exactly one of these strings."""
    grammar: str | None = None
    """Output must match this EBNF grammar (xgrammar's dialect, as vLLM takes it)."""


@dataclass
class SamplingSettings:
    """Engine-neutral sampling settings for one sequence."""

    max_tokens: int
    """Most tokens to generate (0 only makes sense with ``prompt_logprobs``)."""
    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    min_tokens: int = 0
    seed: int | None = None
    """Per-request seed: same seed and settings give the same tokens."""
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    """Stop strings; the stop string itself is not included in the output."""
    logit_bias: dict[int, float] = field(default_factory=dict)
    """Added to these tokens' logits before sampling (OpenAI's ``logit_bias``: -100 bans, 100 forces)."""
    stop_token_ids: list[int] = field(default_factory=list)
    """Extra token ids that end generation (the model's EOS ids always do unless ``ignore_eos``)."""
    ignore_eos: bool = False
    logprobs: int | None = None
    """None: no logprobs. k >= 0: the sampled token's logprob plus the k most likely alternatives."""
    prompt_logprobs: int | None = None
    """None: none. k >= 0: logprob of every prompt token (the first is None) plus k alternatives."""
    structured: StructuredOutput | None = None
    priority: int = 0
    """Scheduling priority, lower first (batch lines ask for 1); vLLM honours it when started with
    ``--scheduling-policy priority``, other engines run requests in arrival order."""


@dataclass
class TokenLogprob:
    """Logprob of one chosen token and of the most likely alternatives at that position."""

    token_id: int
    logprob: float
    top: dict[int, float] = field(default_factory=dict)
    """Most likely token ids at this position and their logprobs (may include ``token_id``)."""


@dataclass
class GenerationDelta:
    """What one sequence produced since the previous delta."""

    token_ids: list[int]
    text: str
    """Detokenised text of ``token_ids`` (may lag a token behind on incomplete UTF-8)."""
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None
    """The stop string or token id that ended generation, when one did."""
    prompt_logprobs: list[TokenLogprob | None] | None = None
    """Only on the first delta, when asked for: one entry per prompt token, the first None."""


@dataclass
class PairPrompt:
    """One (query, document) pair as a cross-encoder reads it: the tokenizer's pair encoding."""

    token_ids: list[int]
    token_type_ids: list[int] | None = None
    """Segment ids (0 for the query, 1 for the document) where the tokenizer gives them (BERT-style models)."""


@runtime_checkable
class Engine(Protocol):
    """An inference engine: token ids in, streamed token ids (and their text) out."""

    name: str
    """Short engine name: "vllm" or "hf"."""
    model_path: str
    """Folder or hub id the engine loaded."""
    tokenizer: Any
    """The model's Hugging Face tokenizer (chat templates are applied outside the engine)."""
    max_model_len: int
    """Longest prompt + completion, in tokens."""
    runner: str
    """"generate" (text out), "pool" (one vector per input out) or "score" (one relevance score per
    (query, document) pair out: a cross-encoder, ``Scorer``)."""

    def lora_names(self) -> list[str]:
        """Names of the LoRA adapters this engine can apply."""
        ...

    def generate(
        self,
        prompt_ids: list[int],
        params: SamplingSettings,
        request_id: str,
        lora_name: str | None = None,
    ) -> AsyncIterator[GenerationDelta]:
        """Stream the generation for one prompt; the last delta has ``finish_reason`` set."""
        ...

    async def pool(self, prompts: list[list[int]], request_id: str) -> list[list[float]]:
        """One embedding per prompt (pooled and normalised as the model declares); EngineError on a
        generation model."""
        ...

    async def abort(self, request_id: str) -> None:
        """Stop a request (client went away); its stream ends with finish_reason "abort"."""
        ...

    def num_unfinished_requests(self) -> int:
        """Requests the engine still holds (for /metrics and leak checks)."""
        ...

    async def shutdown(self) -> None:
        """Release the engine's processes and memory."""
        ...


@runtime_checkable
class Scorer(Engine, Protocol):
    """A cross-encoder (``runner`` "score"): reads a query and a document together, one relevance score out."""

    async def score(self, pairs: list[PairPrompt], request_id: str) -> list[float]:
        """One relevance score per pair (the model's single logit through its activation, sigmoid by
        default, as sentence-transformers' ``CrossEncoder``)."""
        ...
