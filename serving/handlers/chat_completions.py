"""``POST /v1/chat/completions``: a validated request in, a ChatCompletion or a stream of chunks out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from serving.chat import (
    ChatTemplateError,
    ToolPlan,
    held_back_suffix,
    messages_to_dicts,
    parse_tool_output,
    plan_output,
    render_prompt,
    template_kwargs,
    transcript,
)
from serving.errors import APIError
from serving.generation import SequenceJob, SequenceResult, run_jobs, stream_jobs
from serving.handlers.logprobs import chat_logprobs
from serving.handlers.sse import DONE, sse
from serving.protocol import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChoiceLogprobs,
    ChunkChoice,
    ChunkDelta,
    ChunkToolCall,
    ChunkToolCallFunction,
    CompletionTokensDetails,
    Usage,
    random_id,
)
from serving.sampling import check_token_ids, resolve_max_tokens, to_sampling_settings
from serving.security.pii_guard import ReplyGuard, guard_chat_messages, guard_reply, refuse_answer_logprobs
from serving.state import ServerState
from serving.usage import UsageRecord


async def _prepare(state: ServerState, request: ChatCompletionRequest,
                   usage: UsageRecord) -> tuple[str | None, list[int], ToolPlan, list[SequenceJob]]:
    """Validate, render the prompt, plan the output and reserve the credits it can use."""
    lora = state.resolve_model(request.model)
    end_user = getattr(request, "safety_identifier", None) or request.user  # safety_identifier: OpenAI's new name
    usage.start("chat.completions", request.model, lora, end_user)
    guard_chat_messages(request.messages, usage)  # before anything reads the text (the model, the audit)
    refuse_answer_logprobs(usage, bool(request.logprobs), "logprobs")
    usage.set_prompt(lambda: transcript(request.messages))
    if request.n and request.n > state.settings.max_n:
        raise APIError(f"n={request.n} is larger than this server allows ({state.settings.max_n})", param="n")
    check_token_ids(request.stop_token_ids or [], len(state.tokenizer), "stop_token_ids")
    check_token_ids([int(t) for t in request.logit_bias or {}], len(state.tokenizer), "logit_bias")
    tools = [t.model_dump(exclude_none=True) for t in request.tools] if request.tools else None
    if request.tool_choice == "none":
        tools = None
    try:
        prompt_ids = render_prompt(state.tokenizer, messages_to_dicts(request), tools,
                                   kwargs=template_kwargs(request))
    except ChatTemplateError as err:
        raise APIError(str(err), param="messages") from err
    plan = plan_output(request, state.parsers)
    max_tokens = resolve_max_tokens(request.max_completion_tokens or request.max_tokens, len(prompt_ids),
                                    state.engine.max_model_len)
    logprobs = (request.top_logprobs or 0) if request.logprobs else None
    jobs = [
        SequenceJob(i, prompt_ids, to_sampling_settings(request, max_tokens, logprobs=logprobs,
                                                        structured=plan.structured, choice_index=i))
        for i in range(request.n or 1)
    ]
    await usage.reserve(len(prompt_ids) + sum(job.settings.max_tokens for job in jobs))
    usage.prompt_tokens = len(prompt_ids)  # counted (and charged) once the request may run
    return lora, prompt_ids, plan, jobs


def _finish_reason(result_reason: str | None, has_calls: bool) -> str:
    if has_calls:
        return "tool_calls"
    return "length" if result_reason == "length" else "stop"


async def create_chat_completion(
    state: ServerState, request: ChatCompletionRequest, record: UsageRecord
) -> ChatCompletion:
    """Run the request to the end and build one ChatCompletion."""
    lora, prompt_ids, plan, jobs = await _prepare(state, request, record)
    request_id = random_id("chatcmpl")
    results = await run_jobs(state.engine, jobs, request_id, lora, state.metrics, record)
    choices = [_choice(state, request, plan, r) for r in results]
    for choice in choices:
        choice.message.content = guard_reply(choice.message.content, record)
        if choice.message.reasoning_content:
            choice.message.reasoning_content = choice.message.reasoning = guard_reply(
                choice.message.reasoning_content, record)
        for call in choice.message.tool_calls or []:  # placeholders hold no quote: the JSON stays valid
            call.function.arguments = guard_reply(call.function.arguments, record) or ""
    completion_tokens = sum(len(r.token_ids) for r in results)
    if state.parsers is not None and state.parsers.reasons:
        record.reasoning_tokens = sum(state.parsers.reasoning_tokens(r.token_ids) for r in results)
    return ChatCompletion(id=request_id, model=request.model, choices=choices,
                          usage=_usage(len(prompt_ids), completion_tokens, state, record))


def _usage(prompt_tokens: int, completion_tokens: int, state: ServerState, record: UsageRecord) -> Usage:
    details = None
    if state.parsers is not None and state.parsers.reasons:
        details = CompletionTokensDetails(reasoning_tokens=record.reasoning_tokens)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens, completion_tokens_details=details)


def _choice(state: ServerState, request: ChatCompletionRequest, plan: ToolPlan, result: SequenceResult) -> ChatChoice:
    reasoning, text = None, result.text
    if state.parsers is not None and state.parsers.reasons:
        reasoning, text = state.parsers.split_reasoning(result.text)
    content, calls = parse_tool_output(plan, text or "")
    logprobs = None
    if request.logprobs:
        logprobs = ChoiceLogprobs(content=chat_logprobs(state, result.logprobs, request.top_logprobs or 0))
    message = ChatCompletionMessage(content=content, tool_calls=calls or None, reasoning_content=reasoning,
                                    reasoning=reasoning)
    return ChatChoice(index=result.index, message=message, logprobs=logprobs,
                      finish_reason=_finish_reason(result.finish_reason, bool(calls)))


class _ChoiceStream:
    """Per-choice streaming state: what has been sent, what is held back for tool-call parsing."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self.text = ""
        self.sent = 0
        self.buffering = plan.mode in ("named", "required") or (plan.mode == "auto" and not plan.holds_back_tags)

    def visible(self, piece: str) -> str:
        """Text that can go to the client now."""
        self.text += piece
        if self.buffering:
            return ""
        if self.plan.mode == "auto":
            if "<tool_call>" in self.text[self.sent:]:
                self.buffering = True
                cut = self.text.index("<tool_call>", self.sent)
                out, self.sent = self.text[self.sent:cut], cut
                return out
            end = len(self.text) - held_back_suffix(self.text)
        else:
            end = len(self.text)
        out, self.sent = self.text[self.sent:end], end
        return out


async def stream_chat_completion(
    state: ServerState, request: ChatCompletionRequest, record: UsageRecord
) -> AsyncIterator[str]:
    """Validate and start the request (errors raise before the stream starts), then yield SSE events."""
    lora, prompt_ids, plan, jobs = await _prepare(state, request, record)
    request_id = random_id("chatcmpl")
    created = int(time.time())
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    k = request.top_logprobs or 0

    def chunk(index: int, delta: ChunkDelta, finish: str | None = None, logprobs=None) -> str:
        choice = ChunkChoice(index=index, delta=delta, finish_reason=finish,
                             logprobs=ChoiceLogprobs(content=logprobs) if logprobs is not None else None)
        return sse(ChatCompletionChunk(id=request_id, created=created, model=request.model, choices=[choice]))

    async def events() -> AsyncIterator[str]:
        streams = {job.index: _ChoiceStream(plan) for job in jobs}
        thinking = {job.index: state.parsers.reasoning_stream() for job in jobs} \
            if state.parsers is not None and state.parsers.reasons else {}
        guards = {job.index: ReplyGuard(record) for job in jobs}
        thought_guards = {job.index: ReplyGuard(record) for job in jobs}  # the thinking is masked apart
        completion_tokens = 0
        for job in jobs:
            yield chunk(job.index, ChunkDelta(role="assistant", content=""))
        async for index, delta in stream_jobs(state.engine, jobs, request_id, lora, state.metrics, record):
            completion_tokens += len(delta.token_ids)
            answer = delta.text
            if thinking:
                reasoning, answer = thinking[index].feed(delta.text, delta.token_ids)
                reasoning = thought_guards[index].feed(reasoning or "")
                if answer or delta.finish_reason is not None:  # the thinking is over: send what it held back
                    reasoning += thought_guards[index].flush()
                if reasoning:
                    yield chunk(index, ChunkDelta(reasoning_content=reasoning, reasoning=reasoning))
            text = guards[index].feed(streams[index].visible(answer))
            logprobs = chat_logprobs(state, delta.logprobs, k) if request.logprobs and delta.logprobs else None
            if text or logprobs:
                yield chunk(index, ChunkDelta(content=text or None), logprobs=logprobs)
            if delta.finish_reason is None:
                continue
            stream = streams[index]
            rest = stream.text[stream.sent:]
            content, calls = parse_tool_output(plan, rest) if stream.buffering or plan.mode == "auto" else (rest, [])
            content = guards[index].feed(content or "") + guards[index].flush()
            if content:
                yield chunk(index, ChunkDelta(content=content))
            if calls:
                for call in calls:
                    call.function.arguments = guard_reply(call.function.arguments, record) or ""
                tool_deltas = [ChunkToolCall(index=i, id=c.id, type="function",
                                             function=ChunkToolCallFunction(name=c.function.name,
                                                                            arguments=c.function.arguments))
                               for i, c in enumerate(calls)]
                yield chunk(index, ChunkDelta(tool_calls=tool_deltas))
            yield chunk(index, ChunkDelta(), _finish_reason(delta.finish_reason, bool(calls)))
        if thinking:
            record.reasoning_tokens = sum(state.parsers.reasoning_tokens(t.token_ids) for t in thinking.values())
        if include_usage:
            yield sse(ChatCompletionChunk(id=request_id, created=created, model=request.model, choices=[],
                                          usage=_usage(len(prompt_ids), completion_tokens, state, record)))
        yield DONE

    return events()
