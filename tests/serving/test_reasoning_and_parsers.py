"""vLLM's reasoning and tool-call parsers, by vLLM's names, on a small template of our own that emits a thinking
block, and two tool-call formats (Hermes tags, Python-style calls)."""

from __future__ import annotations

import copy
import json

import pytest

from nexus_k.core.errors import UserError
from serving.engines import EngineError, vllm_available
from tests.serving.inprocess import make_inprocess
from tests.serving.scripted_engine import ScriptedEngine

pytestmark = pytest.mark.skipif(not vllm_available(), reason="the parsers are vLLM's")

HELLO = [{"role": "user", "content": "6 곱하기 7은?"}]
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}<|im_end|>\n"
    "{% endfor %}<|im_start|>assistant\n{% if enable_thinking is not defined or enable_thinking %}<think>{% endif %}"
)
REPLY = "<think>6을 7번 더하면 42입니다.</think>답은 42입니다."
WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture
def thinking_tokenizer(tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    tokenizer.chat_template = THINKING_TEMPLATE
    return tokenizer


def server_for(tokenizer, tmp_path, reply: str, **settings):  # type: ignore[no-untyped-def]
    return make_inprocess(tokenizer, tmp_path, ScriptedEngine(tokenizer, script=lambda *_: reply), **settings)


def test_thinking_goes_to_reasoning_content_whole_and_streamed(thinking_tokenizer, tmp_path) -> None:
    server = server_for(thinking_tokenizer, tmp_path, REPLY, reasoning_parser="deepseek_r1")
    client = server.openai()
    whole = client.chat.completions.create(model="tiny-ko", messages=HELLO)
    message = whole.model_dump()["choices"][0]["message"]
    assert (message["reasoning_content"], message["reasoning"], message["content"]) == (
        "6을 7번 더하면 42입니다.", "6을 7번 더하면 42입니다.", "답은 42입니다.")
    thought = len(thinking_tokenizer("6을 7번 더하면 42입니다.", add_special_tokens=False).input_ids)
    assert 0 < whole.usage.completion_tokens_details.reasoning_tokens <= thought + 2
    chunks = [c.model_dump() for c in client.chat.completions.create(
        model="tiny-ko", messages=HELLO, stream=True, stream_options={"include_usage": True})]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "6을 7번 더하면 42입니다."
    assert "".join(d.get("content") or "" for d in deltas) == "답은 42입니다."
    assert chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == \
        whole.usage.completion_tokens_details.reasoning_tokens
    # the thinking comes back in history, and the template renders it
    client.chat.completions.create(model="tiny-ko", messages=[*HELLO, message, {"role": "user", "content": "왜?"}])
    assert "<think>6을 7번 더하면 42입니다.</think>답은 42입니다." in thinking_tokenizer.decode(
        server.engine.calls[-1].prompt_ids)


def test_without_a_reasoning_parser_the_thinking_stays_in_content(thinking_tokenizer, tmp_path) -> None:
    server = server_for(thinking_tokenizer, tmp_path, REPLY)
    message = server.openai().chat.completions.create(model="tiny-ko", messages=HELLO).choices[0].message
    assert "42" in message.content and message.model_dump().get("reasoning_content") is None


def test_a_second_tool_call_format_by_vllms_parser_name(tiny_tokenizer, tmp_path) -> None:
    server = server_for(tiny_tokenizer, tmp_path, '[get_weather(city="서울")]', tool_call_parser="pythonic")
    client = server.openai()
    whole = client.chat.completions.create(model="tiny-ko", messages=HELLO, tools=WEATHER)
    call = whole.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "서울"})
    assert whole.choices[0].finish_reason == "tool_calls"
    chunks = list(client.chat.completions.create(model="tiny-ko", messages=HELLO, tools=WEATHER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ""  # the call never leaks as text
    streamed = [t for c in chunks for t in (c.choices[0].delta.tool_calls or [])]
    assert streamed[0].function.name == "get_weather" and chunks[-1].choices[0].finish_reason == "tool_calls"


def test_hermes_is_read_by_vllms_parser_by_default(tiny_tokenizer, tmp_path) -> None:
    reply = '날씨를 볼게요. <tool_call>{"name": "get_weather", "arguments": {"city": "부산"}}</tool_call>'
    server = server_for(tiny_tokenizer, tmp_path, reply)
    assert server.app.state.nexus.parsers.tool_call_parser == "hermes"
    reply = server.openai().chat.completions.create(model="tiny-ko", messages=HELLO, tools=WEATHER)
    message = reply.choices[0].message
    assert message.content == "날씨를 볼게요." and message.tool_calls[0].function.name == "get_weather"


def test_unknown_parser_names_name_the_closest(tiny_tokenizer, tmp_path) -> None:
    with pytest.raises(EngineError, match="'hermez' is not one of vLLM's tool-call parsers; did you mean hermes"):
        make_inprocess(tiny_tokenizer, tmp_path, tool_call_parser="hermez")
    from serving.cli import _check_parsers

    with pytest.raises(UserError, match="'deepsek_r1' is not one of vLLM's reasoning parsers; did you mean"):
        _check_parsers("hermes", "deepsek_r1")
