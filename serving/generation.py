"""Runs the ``n`` sequences of one API request on the engine and merges their streams.

Whatever ends the consumer (completion, client disconnect, error), every unfinished engine request
is aborted: an engine never keeps working for a client that has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import anyio

from serving.engines.base import Engine, EngineError, GenerationDelta, SamplingSettings, TokenLogprob
from serving.errors import APIError
from serving.metrics import ServerMetrics
from serving.usage import UsageRecord

BATCH_PRIORITY = 1
"""Engine scheduling priority of batch lines (interactive requests: 0, which schedulers take first)."""


@dataclass
class SequenceJob:
    """One engine request: a prompt and the settings of one choice."""

    index: int
    prompt_ids: list[int]
    settings: SamplingSettings


@dataclass
class SequenceResult:
    """Everything one choice produced, accumulated from its deltas."""

    index: int
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    finish_reason: str | None = None

    def add(self, delta: GenerationDelta) -> None:
        """Fold one delta into the result."""
        self.token_ids.extend(delta.token_ids)
        self.text += delta.text
        if delta.logprobs:
            self.logprobs.extend(delta.logprobs)
        if delta.prompt_logprobs is not None:
            self.prompt_logprobs = delta.prompt_logprobs
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason


_DONE = object()


async def _engine_items(
    engine: Engine, jobs: list[SequenceJob], ids: dict[int, str], lora_name: str | None
) -> AsyncIterator[tuple[int, GenerationDelta | Exception | object]]:
    """``(job index, delta | error | _DONE)`` from all jobs as they arrive.

    One job (the common ``n=1``) is read straight from the engine; several run as tasks that feed a queue.
    """
    if len(jobs) == 1:
        job = jobs[0]
        stream = engine.generate(job.prompt_ids, job.settings, ids[job.index], lora_name)
        try:
            async for delta in stream:
                yield job.index, delta
        except Exception as err:  # handed to the consumer, which raises it in the request's context
            yield job.index, err
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
        yield job.index, _DONE
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def run(job: SequenceJob) -> None:
        try:
            async for delta in engine.generate(job.prompt_ids, job.settings, ids[job.index], lora_name):
                await queue.put((job.index, delta))
        except Exception as err:
            await queue.put((job.index, err))
        finally:
            await queue.put((job.index, _DONE))

    tasks = [asyncio.create_task(run(job)) for job in jobs]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is _DONE:
                running -= 1
            yield index, item
    finally:
        with anyio.CancelScope(shield=True):
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def stream_jobs(
    engine: Engine,
    jobs: list[SequenceJob],
    request_id: str,
    lora_name: str | None,
    metrics: ServerMetrics,
    usage: UsageRecord | None = None,
) -> AsyncIterator[tuple[int, GenerationDelta]]:
    """Yield ``(job index, delta)`` from all jobs as they arrive, counting them into ``usage``; abort what is
    left on exit."""
    if usage is not None and usage.metered and not usage.reserved:
        raise RuntimeError("a metered request reached the engine without reserving credits")
    if usage is not None and usage.batch_id is not None:  # interactive requests go first where the engine can
        jobs = [replace(job, settings=replace(job.settings, priority=BATCH_PRIORITY)) for job in jobs]
    ids = {job.index: f"{request_id}-{job.index}" for job in jobs}
    unfinished = set(ids)
    start = time.perf_counter()
    first_token_seen = False
    last_token_time = start
    items = _engine_items(engine, jobs, ids, lora_name)
    try:
        async for index, item in items:
            if item is _DONE:
                continue
            if isinstance(item, EngineError):
                # The transformers engine reports its own internal failures as EngineError too.
                if str(item).startswith(("generation failed:", "prefill failed:")):
                    raise APIError(str(item), 500, "server_error")
                raise APIError(str(item), 400)
            if isinstance(item, Exception):
                raise item
            assert isinstance(item, GenerationDelta)
            now = time.perf_counter()
            if item.token_ids:
                if not first_token_seen:
                    metrics.time_to_first_token.observe(now - start)
                    first_token_seen = True
                else:
                    metrics.inter_token_latency.observe((now - last_token_time) / len(item.token_ids))
                last_token_time = now
            if item.finish_reason is not None:
                unfinished.discard(index)
            if usage is not None:
                usage.completion_tokens += len(item.token_ids)
                usage.add_reply(item.text)
            yield index, item
    finally:
        # Shielded: this also runs when the client's disconnect cancelled us, and the aborts must happen.
        with anyio.CancelScope(shield=True):
            await items.aclose()
            for index in unfinished:
                metrics.aborted.inc()
                with contextlib.suppress(Exception):
                    await engine.abort(ids[index])


async def run_jobs(
    engine: Engine, jobs: list[SequenceJob], request_id: str, lora_name: str | None, metrics: ServerMetrics,
    usage: UsageRecord | None = None,
) -> list[SequenceResult]:
    """Run all jobs to completion and return their accumulated results, in job order."""
    results = {job.index: SequenceResult(job.index, job.prompt_ids) for job in jobs}
    async for index, delta in stream_jobs(engine, jobs, request_id, lora_name, metrics, usage):
        results[index].add(delta)
    return [results[job.index] for job in jobs]
