"""A scripted engine for in-process API tests: token ids in, chosen replies out, one token per delta.

It implements the same ``Engine`` protocol as vLLM and transformers (``serving.engines.base``) with a real
tokenizer, so everything above the engine (chat templates, sampling, handlers, SSE, security) runs for real
while the reply is whatever the test scripts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from serving.engines.base import EngineError, GenerationDelta, SamplingSettings, TokenLogprob, cannot_pool

Script = Callable[[str, SamplingSettings, str | None], str]
"""(prompt text, settings, LoRA name) -> the reply text the engine produces."""


def default_script(prompt: str, settings: SamplingSettings, lora: str | None) -> str:
    """A fixed Korean reply (the adapter name appended when one is used), long enough to hit small limits."""
    return "네, 알겠습니다. 도와드리겠습니다." + (f" [{lora}]" if lora else "")


@dataclass
class Call:
    """One engine request as the engine saw it."""

    prompt_ids: list[int]
    settings: SamplingSettings
    lora: str | None
    request_id: str


@dataclass
class ScriptedEngine:
    """Replies chosen by ``script``; ``gate`` (when set) must be opened before each token is produced."""

    tokenizer: Any
    script: Script = default_script
    max_model_len: int = 512
    loras: list[str] = field(default_factory=list)
    model_path: str = "scripted-model"
    gate: asyncio.Event | None = None
    runner: str = "generate"
    token_delay: float = 0.0
    """Seconds each token takes (a slow model, for drain and multi-process tests)."""
    name: str = "scripted"
    calls: list[Call] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    _running: set[str] = field(default_factory=set)

    def lora_names(self) -> list[str]:
        """The adapters this engine pretends to hold."""
        return list(self.loras)

    def num_unfinished_requests(self) -> int:
        """Requests still streaming."""
        return len(self._running)

    async def generate(self, prompt_ids: list[int], params: SamplingSettings, request_id: str,
                       lora_name: str | None = None) -> AsyncIterator[GenerationDelta]:
        """Stream the scripted reply token by token, honouring max_tokens and stop strings."""
        if len(prompt_ids) + params.max_tokens > self.max_model_len:
            raise EngineError(f"prompt of {len(prompt_ids)} tokens + {params.max_tokens} exceeds the context")
        if lora_name is not None and lora_name not in self.loras:
            raise EngineError(f"unknown LoRA adapter {lora_name!r}")
        self.calls.append(Call(list(prompt_ids), params, lora_name, request_id))
        text = self.script(self.tokenizer.decode(prompt_ids), params, lora_name)
        stop_reason = None
        for stop in params.stop:
            if stop in text:
                text, stop_reason = text[: text.index(stop)], stop
        ids = list(self.tokenizer(text, add_special_tokens=False).input_ids)
        finish = "stop"
        if len(ids) > params.max_tokens:
            ids, finish, stop_reason = ids[: params.max_tokens], "length", None
        self._running.add(request_id)
        try:
            first = True
            if not ids or params.max_tokens == 0:
                yield GenerationDelta([], "", [] if params.logprobs is not None else None, "length"
                                      if params.max_tokens == 0 else finish, stop_reason,
                                      self._prompt_logprobs(prompt_ids, params))
                return
            sent = ""
            for i, token in enumerate(ids):
                if self.gate is not None:
                    await self.gate.wait()
                await asyncio.sleep(self.token_delay)
                last = i == len(ids) - 1
                text_so_far = self.tokenizer.decode(ids[: i + 1])
                piece = ""
                if last or not text_so_far.endswith("\ufffd"):  # hold back an incomplete UTF-8 character
                    piece, sent = text_so_far[len(sent):], text_so_far
                logprobs = [TokenLogprob(token, -0.5, {token: -0.5})] if params.logprobs is not None else None
                yield GenerationDelta([token], piece, logprobs, finish if last else None,
                                      stop_reason if last else None,
                                      self._prompt_logprobs(prompt_ids, params) if first else None)
                first = False
        finally:
            self._running.discard(request_id)

    @staticmethod
    def _prompt_logprobs(prompt_ids: list[int], params: SamplingSettings) -> list[TokenLogprob | None] | None:
        if params.prompt_logprobs is None:
            return None
        return [None, *(TokenLogprob(t, -1.0, {t: -1.0}) for t in prompt_ids[1:])]

    async def pool(self, prompts: list[list[int]], request_id: str) -> list[list[float]]:
        """A generation model produces no embeddings."""
        return await cannot_pool(self.model_path)

    async def abort(self, request_id: str) -> None:
        """Record the abort; the stream's consumer has already stopped reading."""
        self.aborted.append(request_id)
        self._running.discard(request_id)

    async def shutdown(self) -> None:
        """Nothing to release."""


@dataclass
class CharacterEmbedder:
    """A pooling engine whose vector counts the characters of the decoded input (hashed into ``width`` slots):
    texts that share words score high, so rerank orderings are meaningful and known in advance."""

    tokenizer: Any
    width: int = 256
    max_model_len: int = 512
    model_path: str = "character-embedder"
    name: str = "scripted"
    runner: str = "pool"
    dimensions: int = 256
    matryoshka_dimensions: list[int] = field(default_factory=list)
    calls: list[list[list[int]]] = field(default_factory=list)

    def lora_names(self) -> list[str]:
        """No adapters."""
        return []

    def num_unfinished_requests(self) -> int:
        """Nothing is ever left running."""
        return 0

    async def pool(self, prompts: list[list[int]], request_id: str) -> list[list[float]]:
        """One normalised character-count vector per prompt."""
        import zlib

        self.calls.append(prompts)
        out = []
        for ids in prompts:
            vector = [0.0] * self.width
            for char in self.tokenizer.decode(ids, skip_special_tokens=True):
                if not char.isspace():
                    vector[zlib.crc32(char.encode()) % self.width] += 1.0
            norm = sum(v * v for v in vector) ** 0.5 or 1.0
            out.append([v / norm for v in vector])
        return out

    async def generate(self, prompt_ids: list[int], params: SamplingSettings, request_id: str,
                       lora_name: str | None = None) -> AsyncIterator[GenerationDelta]:
        """An embedding model does not generate."""
        raise EngineError("character-embedder is an embedding model: it cannot generate text")
        yield  # pragma: no cover

    async def abort(self, request_id: str) -> None:
        """Nothing to abort."""

    async def shutdown(self) -> None:
        """Nothing to release."""
