"""The interface every backend implements (lm-evaluation-harness's ``LM`` shape) and shared helpers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nexus_k.core.chat_templates import chat_to_ids


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score ``continuation`` after ``context``."""

    context: str
    continuation: str


@dataclass(frozen=True)
class GenerationRequest:
    """Generate an answer to ``prompt`` (greedy unless ``temperature`` > 0)."""

    prompt: str
    max_tokens: int = 32
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    chat: bool = False
    """Send the prompt as one user turn through the model's chat template (or chat API)."""


@dataclass
class Loglikelihood:
    """Sum of the continuation's token log-probabilities, and whether greedy decoding yields it."""

    logprob: float
    is_greedy: bool
    n_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class LM(ABC):
    """A model that scores continuations and generates text; backends register themselves by name."""

    name: ClassVar[str] = ""
    supports_loglikelihood: ClassVar[bool] = True

    @abstractmethod
    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """One result per request, in order."""

    @abstractmethod
    def generate_until(self, requests: list[GenerationRequest]) -> list[str]:
        """The generated text per request, cut before the first stop string."""

    def describe(self) -> dict[str, Any]:
        """Facts about the backend and model for results.json."""
        return {"backend": self.name}

    def close(self) -> None:
        """Release processes and memory (no-op by default)."""
        return None


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cut = len(text)
    for s in stop:
        if s:
            pos = text.find(s)
            if pos != -1:
                cut = min(cut, pos)
    return text[:cut]


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation, split as lm-evaluation-harness does for causal models.

    Trailing spaces of the context move to the continuation; the whole string is encoded once and the
    continuation is what follows the context's own encoding (tokenizer's default special tokens).
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids):]


def empty_context_ids(tokenizer: Any) -> list[int]:
    """What an empty context is scored after: the BOS token, else EOS (lm-evaluation-harness's prefix)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [token]


def generation_prompt_ids(tokenizer: Any, request: GenerationRequest) -> list[int]:
    """Prompt token ids of a generation request: one user turn through the chat template when the task asks
    for chat and the model has a template, else the plain prompt."""
    if request.chat and getattr(tokenizer, "chat_template", None):
        return chat_to_ids(tokenizer, [{"role": "user", "content": request.prompt}])
    return tokenizer.encode(request.prompt)
