"""``POST /v1/completions`` (legacy text completions): prompts, echo and prompt logprobs for scoring."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from serving.errors import APIError
from serving.generation import SequenceJob, SequenceResult, run_jobs, stream_jobs
from serving.handlers.logprobs import completion_logprobs
from serving.handlers.sse import DONE, sse
from serving.protocol import Completion, CompletionChoice, CompletionRequest, Usage, random_id
from serving.sampling import check_token_ids, resolve_max_tokens, to_sampling_settings
from serving.security.pii_guard import ReplyGuard, guard_completion_prompt, guard_reply, refuse_answer_logprobs
from serving.state import ServerState
from serving.usage import UsageRecord


def _prompts(state: ServerState, request: CompletionRequest) -> list[list[int]]:
    prompt = request.prompt
    vocab = len(state.tokenizer)
    if isinstance(prompt, str):
        prompt = [prompt]
    if isinstance(prompt[0], int):
        prompt = [prompt]
    out = []
    for item in prompt:
        if isinstance(item, str):
            if item == "":
                raise APIError("prompt must not be empty", param="prompt")
            out.append(list(state.tokenizer(item).input_ids))
        else:
            check_token_ids(item, vocab, "prompt")
            out.append(list(item))
    return out


async def _prepare(state: ServerState, request: CompletionRequest,
                   usage: UsageRecord) -> tuple[str | None, list[list[int]], list[SequenceJob]]:
    """Validate, tokenise the prompts and reserve the credits the request can use."""
    lora = state.resolve_model(request.model)
    end_user = getattr(request, "safety_identifier", None) or request.user  # safety_identifier: OpenAI's new name
    usage.start("completions", request.model, lora, end_user)
    request.prompt = guard_completion_prompt(request.prompt, usage, state.tokenizer.decode)  # echo shows the masked
    refuse_answer_logprobs(usage, request.logprobs is not None and request.max_tokens != 0, "logprobs")
    n = request.n or 1
    prompts = _prompts(state, request)
    check_token_ids(request.stop_token_ids or [], len(state.tokenizer), "stop_token_ids")
    check_token_ids([int(t) for t in request.logit_bias or {}], len(state.tokenizer), "logit_bias")
    if n * len(prompts) > state.settings.max_n * 8:
        raise APIError(f"too many sequences in one request ({n} x {len(prompts)} prompts)", param="n")
    if n > state.settings.max_n:
        raise APIError(f"n={n} is larger than this server allows ({state.settings.max_n})", param="n")
    if request.max_tokens == 0 and not request.echo:
        raise APIError("max_tokens=0 only makes sense with echo=true (prompt scoring)", param="max_tokens")
    logprobs = request.logprobs
    jobs = []
    for p, ids in enumerate(prompts):
        max_tokens = resolve_max_tokens(request.max_tokens, len(ids), state.engine.max_model_len)
        for j in range(n):
            settings = to_sampling_settings(
                request, max_tokens, logprobs=logprobs,
                prompt_logprobs=logprobs if request.echo and logprobs is not None else None,
                choice_index=j,
            )
            jobs.append(SequenceJob(p * n + j, ids, settings))
    prompt_tokens = sum(len(p) for p in prompts)
    usage.set_prompt(lambda: "\n".join(state.tokenizer.decode(p) for p in prompts))
    await usage.reserve(prompt_tokens + sum(job.settings.max_tokens for job in jobs))
    usage.prompt_tokens = prompt_tokens  # counted (and charged) once the request may run
    return lora, prompts, jobs


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def _choice(state: ServerState, request: CompletionRequest, result: SequenceResult,
            usage: UsageRecord) -> CompletionChoice:
    text = guard_reply(result.text, usage) or ""
    logprobs = None
    if request.echo:
        prompt_text = state.tokenizer.decode(result.prompt_ids, skip_special_tokens=False)
        text = prompt_text + text
    if request.logprobs is not None:
        k = request.logprobs
        if request.echo:
            entries = list(result.prompt_logprobs or [None] * len(result.prompt_ids)) + list(result.logprobs)
            logprobs = completion_logprobs(state, result.prompt_ids + result.token_ids, entries, k)
        else:
            logprobs = completion_logprobs(state, result.token_ids, list(result.logprobs), k)
    return CompletionChoice(index=result.index, text=text, logprobs=logprobs,
                            finish_reason=_finish(result.finish_reason))


async def create_completion(state: ServerState, request: CompletionRequest, record: UsageRecord) -> Completion:
    """Run every prompt x n and build one Completion."""
    lora, prompts, jobs = await _prepare(state, request, record)
    request_id = random_id("cmpl")
    results = await run_jobs(state.engine, jobs, request_id, lora, state.metrics, record)
    prompt_tokens = sum(len(p) for p in prompts)
    completion_tokens = sum(len(r.token_ids) for r in results)
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                  total_tokens=prompt_tokens + completion_tokens)
    return Completion(id=request_id, model=request.model, choices=[_choice(state, request, r, record) for r in results],
                      usage=usage)


async def stream_completion(
    state: ServerState, request: CompletionRequest, record: UsageRecord
) -> AsyncIterator[str]:
    """Validate, then stream text deltas as completion chunks."""
    lora, prompts, jobs = await _prepare(state, request, record)
    request_id = random_id("cmpl")
    created = int(time.time())
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    by_index = {job.index: job for job in jobs}

    def chunk(choice: CompletionChoice) -> str:
        return sse(Completion(id=request_id, created=created, model=request.model, choices=[choice]))

    async def events() -> AsyncIterator[str]:
        completion_tokens = 0
        started: set[int] = set()
        guards = {job.index: ReplyGuard(record) for job in jobs}
        async for index, delta in stream_jobs(state.engine, jobs, request_id, lora, state.metrics, record):
            completion_tokens += len(delta.token_ids)
            text = guards[index].feed(delta.text)
            if delta.finish_reason:
                text += guards[index].flush()
            if request.echo and index not in started:
                text = state.tokenizer.decode(by_index[index].prompt_ids, skip_special_tokens=False) + text
            started.add(index)
            logprobs = None
            if request.logprobs is not None and delta.logprobs:
                logprobs = completion_logprobs(state, delta.token_ids, list(delta.logprobs), request.logprobs)
            finish = _finish(delta.finish_reason) if delta.finish_reason else None
            if text or logprobs or finish:
                yield chunk(CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish))
        prompt_tokens = sum(len(p) for p in prompts)
        if include_usage:
            usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          total_tokens=prompt_tokens + completion_tokens)
            yield sse(Completion(id=request_id, created=created, model=request.model, choices=[], usage=usage))
        yield DONE

    return events()
