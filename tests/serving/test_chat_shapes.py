"""Today's chat-completion request shapes, as 2026 clients send them, in-process with the openai client."""

from __future__ import annotations

import copy
import json

import openai
import pytest

from serving.security.audit import AuditStore
from tests.serving.inprocess import make_inprocess
from tests.serving.scripted_engine import ScriptedEngine

HELLO = [{"role": "user", "content": "안녕하세요"}]
WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def test_replaying_model_dump_and_todays_history_shapes(inprocess) -> None:
    client = inprocess.openai()
    first = client.chat.completions.create(model="tiny-ko", messages=HELLO)
    replay = first.choices[0].message.model_dump()  # annotations, audio, function_call, refusal: all None
    assert {"annotations", "audio", "function_call"} <= set(replay)
    history = [
        *HELLO,
        {**replay, "reasoning_content": "먼저 생각해 보면...", "reasoning": "먼저 생각해 보면..."},
        {"role": "user", "content": [{"type": "text", "text": "고마워요", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "맑음"},
    ]
    again = client.chat.completions.create(model="tiny-ko", messages=history, reasoning_effort="low",
                                           stop=[f"끝{i}" for i in range(6)], verbosity="low",
                                           prompt_cache_key="k", service_tier="auto", store=True)
    assert again.choices[0].message.content
    assert inprocess.engine.calls[-1].settings.stop == [f"끝{i}" for i in range(6)]


def test_top_level_unknown_parameters_stay_an_error(inprocess) -> None:
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: frobnicate"):
        inprocess.openai().chat.completions.create(model="tiny-ko", messages=HELLO, extra_body={"frobnicate": 1})


def test_stop_lists_up_to_64_strings(inprocess) -> None:
    client = inprocess.openai()
    client.chat.completions.create(model="tiny-ko", messages=HELLO, stop=[f"s{i}" for i in range(16)])
    assert len(inprocess.engine.calls[-1].settings.stop) == 16
    with pytest.raises(openai.BadRequestError, match="stop"):
        client.chat.completions.create(model="tiny-ko", messages=HELLO, stop=[f"s{i}" for i in range(65)])


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
])
def test_media_parts_to_a_text_model_are_a_clear_400(inprocess, part) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "이게 뭐예요?"}, part]}]
    with pytest.raises(openai.BadRequestError, match=f"reads text only: `{part['type']}`"):
        inprocess.openai().chat.completions.create(model="tiny-ko", messages=messages)


def test_logit_bias_reaches_the_engine(inprocess) -> None:
    inprocess.openai().chat.completions.create(model="tiny-ko", messages=HELLO, logit_bias={"5": -100, "7": 3})
    assert inprocess.engine.calls[-1].settings.logit_bias == {5: -100.0, 7: 3.0}


def test_legacy_functions_are_tools(tiny_tokenizer, tmp_path) -> None:
    engine = ScriptedEngine(tiny_tokenizer, script=lambda *_: '{"city": "대전"}')
    server = make_inprocess(tiny_tokenizer, tmp_path, engine)
    reply = server.openai().chat.completions.create(
        model="tiny-ko", messages=HELLO, functions=[WEATHER[0]["function"]], function_call={"name": "get_weather"})
    call = reply.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "대전"})
    assert engine.calls[0].settings.structured.json_schema == WEATHER[0]["function"]["parameters"]


@pytest.mark.parametrize(("reply", "calls"), [
    ('<tool_call>{"name": "get_weather", "arguments": {"city": "서울"}}</tool_call>', 1),
    ('{"answer": "맑음"}', 0),
])
def test_tools_with_response_format_allow_a_call_or_the_schema(tiny_tokenizer, tmp_path, reply, calls) -> None:
    engine = ScriptedEngine(tiny_tokenizer, script=lambda *_: reply)
    server = make_inprocess(tiny_tokenizer, tmp_path, engine)
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    answer = server.openai().chat.completions.create(
        model="tiny-ko", messages=HELLO, tools=WEATHER,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    grammar = engine.calls[0].settings.structured.grammar
    assert "<tool_call>" in grammar and "answer" in grammar  # one grammar: a tool call or the format
    message = answer.choices[0].message
    assert len(message.tool_calls or []) == calls
    if not calls:
        assert json.loads(message.content) == {"answer": "맑음"}


def test_the_grammar_accepts_a_call_and_the_schema_and_nothing_else(tiny_tokenizer) -> None:
    import xgrammar as xgr

    from serving.chat import plan_output
    from serving.protocol import ChatCompletionRequest

    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    request = ChatCompletionRequest(model="m", messages=HELLO, tools=WEATHER, response_format={
        "type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    compiled = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tiny_tokenizer)).compile_grammar(
        plan_output(request).structured.grammar)

    def accepts(text: str) -> bool:
        return xgr.GrammarMatcher(compiled).accept_string(text)

    assert accepts('{"answer": "맑음"}')
    assert accepts('<tool_call>{"name": "get_weather", "arguments": {"city": "서울"}}</tool_call>')
    assert not accepts("그냥 글")
    assert not accepts('{"other": 1}')
    assert not accepts('<tool_call>{"name": "delete_all", "arguments": {}}')


def test_reasoning_effort_and_template_kwargs_reach_the_template(tiny_tokenizer, tmp_path) -> None:
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                               "thinking={{ enable_thinking }} effort={{ reasoning_effort }} x={{ x }}")
    server = make_inprocess(tokenizer, tmp_path, ScriptedEngine(tokenizer))
    server.openai().chat.completions.create(model="tiny-ko", messages=HELLO, reasoning_effort="minimal",
                                            extra_body={"chat_template_kwargs": {"x": 1}})
    assert tokenizer.decode(server.engine.calls[0].prompt_ids).endswith("thinking=False effort=minimal x=1")


def test_safety_identifier_is_the_audit_rows_end_user(inprocess) -> None:
    inprocess.openai().chat.completions.create(model="tiny-ko", messages=HELLO, safety_identifier="hash-77",
                                               user="old-user")
    assert AuditStore(inprocess.database_url).recent(1)[0].end_user == "hash-77"


def test_audio_and_web_search_are_refused_clearly(inprocess) -> None:
    client = inprocess.openai()
    with pytest.raises(openai.BadRequestError, match="audio output is not supported"):
        client.chat.completions.create(model="tiny-ko", messages=HELLO, modalities=["text", "audio"],
                                       audio={"voice": "alloy", "format": "wav"})
    with pytest.raises(openai.BadRequestError, match="does not search the web"):
        client.chat.completions.create(model="tiny-ko", messages=HELLO, web_search_options={})


@pytest.mark.parametrize("responses_api", [False, True], ids=["chat", "responses"])
def test_langchain_with_structured_output(tiny_tokenizer, tmp_path, responses_api) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        sunny: bool

    engine = ScriptedEngine(tiny_tokenizer, script=lambda *_: '{"city": "서울", "sunny": true}')
    server = make_inprocess(tiny_tokenizer, tmp_path, engine)
    llm = langchain_openai.ChatOpenAI(model="tiny-ko", base_url="http://testserver/v1", api_key="x",
                                      http_client=server.http, max_retries=0, use_responses_api=responses_api)
    plain = llm.invoke("안녕하세요")
    assert plain.content if not responses_api else plain.text
    answer = llm.with_structured_output(Weather).invoke("서울 날씨 알려줘")
    assert answer == Weather(city="서울", sunny=True)
    assert engine.calls[-1].settings.structured is not None  # enforced by the grammar, not trusted
