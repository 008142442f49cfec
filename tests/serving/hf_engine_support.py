"""Helpers for the transformers-engine tests: run requests to completion, reference generations."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import torch

from serving.engines.base import GenerationDelta, SamplingSettings


@dataclass
class Finished:
    """A request run to its end."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    deltas: list[GenerationDelta] = field(default_factory=list)

    @property
    def last(self) -> GenerationDelta:
        """The final delta (carries the finish reason)."""
        return self.deltas[-1]


async def collect(engine, prompt: list[int], params: SamplingSettings, request_id: str,
                  lora_name: str | None = None) -> Finished:
    """Consume one stream completely."""
    done = Finished()
    async for delta in engine.generate(prompt, params, request_id, lora_name):
        done.deltas.append(delta)
        done.token_ids += delta.token_ids
        done.text += delta.text
    return done


def run(coro):
    """Run a coroutine on a fresh event loop (the engine is loop-agnostic)."""
    return asyncio.run(coro)


def greedy(**kwargs) -> SamplingSettings:
    """Greedy settings."""
    return SamplingSettings(temperature=0.0, **kwargs)


def reference_greedy(model, prompt: list[int], max_new_tokens: int, **kwargs) -> list[int]:
    """transformers' own greedy generation (new tokens only)."""
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False, **kwargs)
    return out[0, len(prompt):].tolist()
