"""The project's own inference engines (``serving.engines``): vLLM in-process, or its transformers engine.

Log-likelihoods come from the engine's prompt log-probabilities (``max_tokens=0, prompt_logprobs=1``) on
context + continuation; all requests are in flight together so the engine batches them (vLLM also
shares cached prefixes between requests where it can).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from evals.backends.base import (
    LM,
    GenerationRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    cut_at_stop,
    empty_context_ids,
    encode_pair,
    generation_prompt_ids,
)
from evals.progress import progress_bar
from nexus_k.core.errors import UserError

log = logging.getLogger(__name__)


def _engine_fields(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """Engine settings from backend options: EngineSettings fields as they are, the rest as vLLM engine
    arguments (vLLM checks their names)."""
    from serving.engines.settings import EngineSettings

    fields = {k: v for k, v in options.items() if k in EngineSettings.model_fields}
    rest = {k: v for k, v in options.items() if k not in EngineSettings.model_fields}
    if rest:
        fields["engine_args"] = {**fields.get("engine_args", {}), **rest}
    return fields


class EngineBackend(LM):
    """Drive a ``serving.engines`` Engine from synchronous evaluation code."""

    name = "engine"

    def __init__(self, model: str, *, kind: str = "vllm", max_in_flight: int = 256, **engine_options: Any) -> None:
        from serving.engines import EngineError, load_engine
        from serving.engines.settings import as_settings

        self.kind = kind
        self.name = kind if kind == "vllm" else f"engine-{kind}"
        self.max_in_flight = max_in_flight
        self._loop = asyncio.new_event_loop()
        self._ids = itertools.count()
        try:
            settings = as_settings(model, kind, _engine_fields(kind, engine_options))
            self.engine = self._loop.run_until_complete(load_engine(settings))
        except EngineError as err:
            self._loop.close()
            raise UserError(str(err)) from None
        self.tokenizer = self.engine.tokenizer

    @classmethod
    def from_engine(cls, engine: Any, loop: asyncio.AbstractEventLoop | None = None) -> EngineBackend:
        """Wrap an engine that is already running (tests, or a server process sharing its engine)."""
        backend = cls.__new__(cls)
        backend.kind = getattr(engine, "name", "engine")
        backend.name = backend.kind if backend.kind == "vllm" else f"engine-{backend.kind}"
        backend.max_in_flight = 256
        backend._loop = loop or asyncio.new_event_loop()
        backend._ids = itertools.count()
        backend.engine = engine
        backend.tokenizer = engine.tokenizer
        return backend

    def describe(self) -> dict[str, Any]:
        """Engine kind, model path and context length."""
        return {"backend": self.name, "model": self.engine.model_path, "max_model_len": self.engine.max_model_len}

    async def _collect(self, prompt_ids: list[int], params: Any, semaphore: asyncio.Semaphore) -> tuple[str, Any]:
        async with semaphore:
            text, prompt_lps = [], None
            async for delta in self.engine.generate(prompt_ids, params, f"eval-{next(self._ids)}"):
                if delta.prompt_logprobs is not None:
                    prompt_lps = delta.prompt_logprobs
                text.append(delta.text)
            return "".join(text), prompt_lps

    async def _run_all(self, jobs: list[tuple[list[int], Any]], label: str) -> list[tuple[str, Any]]:
        semaphore = asyncio.Semaphore(self.max_in_flight)
        results: list[Any] = [None] * len(jobs)
        with progress_bar(len(jobs), label) as advance:
            async def one(i: int, ids: list[int], params: Any) -> None:
                results[i] = await self._collect(ids, params, semaphore)
                advance()

            await asyncio.gather(*(one(i, ids, params) for i, (ids, params) in enumerate(jobs)))
        return results

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """Score each continuation from the prompt log-probabilities of context + continuation."""
        from serving.engines.base import SamplingSettings

        pairs = []
        for r in requests:
            if r.context:
                pairs.append(encode_pair(self.tokenizer, r.context, r.continuation))
            else:
                pairs.append((empty_context_ids(self.tokenizer), self.tokenizer.encode(r.continuation)))
        limit = self.engine.max_model_len - 1
        jobs = []
        for ctx, cont in pairs:
            ids = (ctx + cont)[-limit:]
            jobs.append((ids, SamplingSettings(max_tokens=0, temperature=0.0, prompt_logprobs=1)))
        raw = self._loop.run_until_complete(self._run_all(jobs, "log-likelihood"))
        out = []
        for (_ctx, cont), (ids, _), (_, prompt_lps) in zip(pairs, jobs, raw, strict=True):
            if prompt_lps is None:
                raise UserError(f"engine {self.name} returned no prompt log-probabilities")
            tail = prompt_lps[len(ids) - len(cont):]
            logprob = sum(entry.logprob for entry in tail)
            greedy = all(max(entry.top, key=entry.top.get) == entry.token_id for entry in tail if entry.top)
            out.append(Loglikelihood(logprob=logprob, is_greedy=greedy, n_tokens=len(cont)))
        return out

    def generate_until(self, requests: list[GenerationRequest]) -> list[str]:
        """Generate every answer concurrently; stop strings are applied by the engine and again here."""
        from serving.engines.base import SamplingSettings

        jobs = []
        for r in requests:
            ids = generation_prompt_ids(self.tokenizer, r)[-(self.engine.max_model_len - r.max_tokens):]
            jobs.append((ids, SamplingSettings(max_tokens=r.max_tokens, temperature=r.temperature,
                                               stop=list(r.stop))))
        raw = self._loop.run_until_complete(self._run_all(jobs, "generate"))
        return [cut_at_stop(text, r.stop) for (text, _), r in zip(raw, requests, strict=True)]

    def close(self) -> None:
        """Shut the engine down and close the event loop."""
        if not self._loop.is_closed():
            self._loop.run_until_complete(self.engine.shutdown())
            self._loop.close()
