"""``POST /v1/responses`` (whole answers) and the stored-response routes' logic.

A request becomes a chat conversation (``responses_input``), runs like a chat completion (same template, tool
plan and parser, credits reserved before the engine runs), and its answer becomes output items. With
``store`` (the default) the response and the conversation it answered go to the database, owned by the caller's
organisation; ``previous_response_id`` continues such a conversation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from serving.chat import (
    ChatTemplateError,
    ToolPlan,
    messages_to_dicts,
    parse_tool_output,
    plan_output,
    render_prompt,
    template_kwargs,
    transcript,
)
from serving.engines.base import TokenLogprob
from serving.errors import APIError
from serving.generation import SequenceJob, run_jobs
from serving.handlers.file_search import run_file_search
from serving.handlers.logprobs import chat_logprobs
from serving.handlers.responses_input import (
    check_call_ids,
    guard_input,
    items_to_messages,
    new_input_items,
    to_chat_request,
)
from serving.protocol import ResponseToolCall
from serving.protocol.responses import (
    CreateResponseRequest,
    FunctionToolCall,
    IncompleteDetails,
    OutputItem,
    OutputMessage,
    OutputText,
    OutputTokensDetails,
    ReasoningOutput,
    ReasoningText,
    Response,
    ResponseError,
    ResponseUsage,
    response_id,
)
from serving.sampling import resolve_max_tokens, to_sampling_settings
from serving.security.pii_guard import guard_reply, refuse_answer_logprobs
from serving.state import ServerState
from serving.storage.responses import ResponseStore, response_store
from serving.usage import UsageRecord

LOGPROBS = "message.output_text.logprobs"
"""The ``include`` value that asks for output token logprobs."""


def store_of(state: ServerState) -> ResponseStore:
    """The server's store of responses (its database, its retention)."""
    return response_store(state.settings.database_url, state.settings.responses_retention_days)


@dataclass
class Prepared:
    """A validated request, ready to generate: its prompt, plan and the response it will become."""

    request: CreateResponseRequest
    lora: str | None
    plan: ToolPlan
    job: SequenceJob
    items: list[dict[str, Any]]
    """The whole conversation (a previous response's input and output first), as stored."""
    response: Response
    """The response in progress (no output yet)."""
    owner: int | None
    logprobs: int | None
    """How many top alternatives each output token's logprob lists (None: no logprobs asked for)."""
    search: Any = None
    """The ``file_search`` tool's outcome (``serving.handlers.file_search.FileSearchOutcome``), or None."""


async def _conversation(state: ServerState, request: CreateResponseRequest, owner: int | None,
                        new_items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if request.previous_response_id is not None:
        previous = await store_of(state).get(request.previous_response_id, owner)
        if previous is None:
            raise APIError(f"Previous response with id '{request.previous_response_id}' not found.",
                           param="previous_response_id", code="previous_response_not_found")
        items = [*previous.input_items, *previous.response.get("output", [])]
    items += new_items
    check_call_ids(items)
    return items


def _render(state: ServerState, request: CreateResponseRequest, messages: list[dict[str, Any]],
            tools: list[dict[str, Any]] | None, kwargs: dict[str, Any]) -> tuple[list[int], int]:
    """Prompt ids and completion budget; with ``truncation: auto`` the oldest turns go until it fits."""
    limit = state.engine.max_model_len
    while True:
        try:
            prompt_ids = render_prompt(state.tokenizer, messages, tools, kwargs=kwargs)
        except ChatTemplateError as err:
            raise APIError(str(err), param="input") from err
        try:
            return prompt_ids, resolve_max_tokens(request.max_output_tokens, len(prompt_ids), limit)
        except APIError as err:
            first = 1 if messages and messages[0]["role"] == "system" else 0
            users = [i for i, m in enumerate(messages) if m["role"] == "user" and i > first]
            if request.truncation != "auto" or not users:
                err.param = "input"
                raise
            messages = messages[:first] + messages[users[0]:]  # drop the oldest turn


async def prepare(state: ServerState, request: CreateResponseRequest, usage: UsageRecord,
                  owner: int | None) -> Prepared:
    """Validate, build the conversation and prompt, plan the output and reserve the credits it can use."""
    lora = state.resolve_model(request.model)
    usage.start("responses", request.model, lora, request.safety_identifier or request.user)
    new_items = new_input_items(request)
    instructions = guard_input(new_items, request.instructions, usage)  # before the model or the store sees it
    logprobs = (request.top_logprobs or 0) if LOGPROBS in (request.include or []) else None
    refuse_answer_logprobs(usage, logprobs is not None, "include")
    items = await _conversation(state, request, owner, new_items)
    messages = items_to_messages(items, instructions)
    search = await run_file_search(state, request, messages, usage, owner)  # sources into the last user turn
    chat = to_chat_request(request, messages)
    usage.set_prompt(lambda: transcript(chat.messages))
    tools = [t.model_dump(exclude_none=True) for t in chat.tools] if chat.tools else None
    prompt_ids, max_tokens = _render(state, request, messages_to_dicts(chat), None if chat.tool_choice == "none"
                                     else tools, template_kwargs(chat))
    plan = plan_output(chat, state.parsers)
    job = SequenceJob(0, prompt_ids, to_sampling_settings(chat, max_tokens, logprobs=logprobs,
                                                          structured=plan.structured))
    await usage.reserve(len(prompt_ids) + max_tokens)
    usage.prompt_tokens = len(prompt_ids)
    response = skeleton(request, instructions)
    usage.resources.append(response.id)
    return Prepared(request, lora, plan, job, items, response, owner, logprobs, search)


def skeleton(request: CreateResponseRequest, instructions: str | None) -> Response:
    """The response object in progress, echoing the request's settings as OpenAI does (``instructions`` as the
    PII guard left them)."""
    text: dict[str, Any] = {"format": {"type": "text"}, "verbosity": "medium"}
    if request.text is not None:
        if request.text.format is not None:
            text["format"] = request.text.format.model_dump(by_alias=True, exclude_none=True)
        text["verbosity"] = request.text.verbosity or "medium"
    choice = request.tool_choice or "auto"
    return Response(
        id=response_id("resp"), status="in_progress", instructions=instructions,
        max_output_tokens=request.max_output_tokens, max_tool_calls=request.max_tool_calls,
        metadata=request.metadata or {}, model=request.model,
        parallel_tool_calls=request.parallel_tool_calls is not False,
        previous_response_id=request.previous_response_id, prompt_cache_key=request.prompt_cache_key,
        reasoning=request.reasoning or {}, safety_identifier=request.safety_identifier,
        store=request.store is not False,
        temperature=1.0 if request.temperature is None else request.temperature, text=text,
        tool_choice=choice if isinstance(choice, str) else choice.model_dump(),
        tools=[t.model_dump(exclude_none=True) for t in request.tools or []], top_logprobs=request.top_logprobs or 0,
        top_p=1.0 if request.top_p is None else request.top_p, truncation=request.truncation or "disabled",
        user=request.user,
    )


def function_items(prepared: Prepared, calls: list[ResponseToolCall], cut: bool = False) -> list[FunctionToolCall]:
    """Parsed tool calls as ``function_call`` output items (at most ``max_tool_calls``); ``cut``: the token
    limit ended the arguments (a named call is whatever was generated)."""
    limit = prepared.request.max_tool_calls
    return [FunctionToolCall(id=response_id("fc"), call_id=c.id, name=c.function.name,
                             arguments=c.function.arguments, status="incomplete" if cut else "completed")
            for c in (calls[:limit] if limit else calls)]


def output_logprobs(state: ServerState, prepared: Prepared, entries: list[TokenLogprob] | None) -> list[dict]:
    """Engine logprobs in the shape of ``output_text.logprobs`` (empty unless the request included them)."""
    if prepared.logprobs is None or not entries:
        return []
    return [entry.model_dump() for entry in chat_logprobs(state, entries, prepared.logprobs)]


def message_item(message_id: str, text: str, incomplete: bool, logprobs: list[dict] | None = None) -> OutputMessage:
    """An assistant message output item holding ``text``."""
    return OutputMessage(id=message_id, status="incomplete" if incomplete else "completed",
                         content=[OutputText(text=text, logprobs=logprobs or [])])


def reasoning_item(item_id: str, text: str, incomplete: bool) -> ReasoningOutput:
    """A reasoning output item holding the model's thinking."""
    return ReasoningOutput(id=item_id, content=[ReasoningText(text=text)],
                           status="incomplete" if incomplete else "completed")


def finish(prepared: Prepared, output: list[OutputItem], finish_reason: str | None, output_tokens: int,
           error: APIError | None = None, reasoning_tokens: int = 0) -> Response:
    """The final response: status, output, usage and, when cut short or failed, why."""
    response = prepared.response.model_copy(deep=True)
    response.output = output
    response.completed_at = int(time.time())
    if error is not None:
        response.status = "failed"
        response.error = ResponseError(code=error.code or "server_error", message=error.message)
    elif finish_reason == "length" and not any(isinstance(item, FunctionToolCall) and item.status == "completed"
                                               for item in output):
        response.status = "incomplete"
        response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
    else:
        response.status = "completed"
    input_tokens = len(prepared.job.prompt_ids)
    response.usage = ResponseUsage(input_tokens=input_tokens, output_tokens=output_tokens,
                                   output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning_tokens),
                                   total_tokens=input_tokens + output_tokens)
    return response


async def save(state: ServerState, prepared: Prepared, response: Response) -> None:
    """Store the response and its conversation when the request asked for it (the default)."""
    if response.store:
        await store_of(state).save(prepared.owner, response.model_dump(mode="json"), prepared.items)


async def create_response(state: ServerState, request: CreateResponseRequest, usage: UsageRecord,
                          owner: int | None) -> Response:
    """Run the request to the end and return (and store) the whole response."""
    prepared = await prepare(state, request, usage, owner)
    [result] = await run_jobs(state.engine, [prepared.job], prepared.response.id, prepared.lora, state.metrics,
                              usage)
    incomplete = result.finish_reason == "length"
    output: list[OutputItem] = [prepared.search.item] if prepared.search is not None else []
    thinking, text = None, result.text
    if state.parsers is not None and state.parsers.reasons:
        thinking, text = state.parsers.split_reasoning(result.text)
        usage.reasoning_tokens = state.parsers.reasoning_tokens(result.token_ids)
    if thinking:
        output.append(reasoning_item(response_id("rs"), guard_reply(thinking, usage) or "", incomplete and not text))
    content, calls = parse_tool_output(prepared.plan, text or "")
    content = guard_reply(content, usage)
    for call in calls:  # placeholders hold no quote: the JSON stays valid
        call.function.arguments = guard_reply(call.function.arguments, usage) or ""
    if content:
        message = message_item(response_id("msg"), content, incomplete and not calls,
                               output_logprobs(state, prepared, result.logprobs))
        if prepared.search is not None:
            message.content[0].annotations = prepared.search.annotations(content)
        output.append(message)
    output += function_items(prepared, calls, incomplete and prepared.plan.mode == "named")
    response = finish(prepared, output, result.finish_reason, len(result.token_ids),
                      reasoning_tokens=usage.reasoning_tokens)
    await save(state, prepared, response)
    return response
