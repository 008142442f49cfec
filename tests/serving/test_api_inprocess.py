"""The OpenAI API's behaviour in-process: the real routes, handlers, sampling and generation code on a
scripted engine, driven by the official ``openai`` client (no server process, no sockets)."""

from __future__ import annotations

import json

import openai
import pytest

from serving.security.audit import AuditStore
from serving.security.auth import KeyStore
from tests.serving.inprocess import make_inprocess
from tests.serving.scripted_engine import ScriptedEngine

HELLO = [{"role": "user", "content": "안녕하세요"}]
REPLY = "네, 알겠습니다. 도와드리겠습니다."


def test_chat_whole_and_streamed_agree_and_count_tokens(inprocess, tiny_tokenizer) -> None:
    client = inprocess.openai()
    whole = client.chat.completions.create(model="tiny-ko", messages=HELLO)
    assert whole.choices[0].message.content == REPLY and whole.choices[0].finish_reason == "stop"
    reply_tokens = len(tiny_tokenizer(REPLY, add_special_tokens=False).input_ids)
    assert whole.usage.completion_tokens == reply_tokens
    assert whole.usage.prompt_tokens == len(inprocess.engine.calls[0].prompt_ids)
    chunks = list(client.chat.completions.create(model="tiny-ko", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_the_prompt_is_the_chat_template_of_the_messages(inprocess, tiny_tokenizer) -> None:
    inprocess.openai().chat.completions.create(
        model="tiny-ko", messages=[{"role": "developer", "content": "존댓말로"}, *HELLO])
    expected = tiny_tokenizer.apply_chat_template([{"role": "system", "content": "존댓말로"}, *HELLO],
                                                  tokenize=False, add_generation_prompt=True)
    assert tiny_tokenizer.decode(inprocess.engine.calls[0].prompt_ids) == expected


def test_sampling_fields_reach_the_engine(inprocess) -> None:
    inprocess.openai().chat.completions.create(
        model="tiny-ko", messages=HELLO, temperature=0.3, top_p=0.9, seed=7, n=3, max_tokens=4,
        presence_penalty=0.5, stop=["끝"], extra_body={"top_k": 5, "min_tokens": 2})
    settings = [c.settings for c in inprocess.engine.calls]
    assert [s.seed for s in settings] == [7, 8, 9]  # distinct seeds per choice
    first = settings[0]
    assert (first.temperature, first.top_p, first.top_k, first.min_tokens, first.max_tokens) == (0.3, 0.9, 5, 2, 4)
    assert (first.presence_penalty, first.stop) == (0.5, ["끝"])


def test_max_tokens_and_stop_end_the_reply(inprocess) -> None:
    client = inprocess.openai()
    cut = client.chat.completions.create(model="tiny-ko", messages=HELLO, max_tokens=3)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 3
    stopped = client.chat.completions.create(model="tiny-ko", messages=HELLO, stop=["겠"])
    assert stopped.choices[0].message.content == "네, 알" and stopped.choices[0].finish_reason == "stop"


def test_hermes_tool_calls_are_parsed_whole_and_streamed(tiny_tokenizer, tmp_path) -> None:
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "서울"}}</tool_call>'
    engine = ScriptedEngine(tiny_tokenizer, script=lambda *_: "확인해 볼게요. " + call)
    server = make_inprocess(tiny_tokenizer, tmp_path, engine)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    client = server.openai()
    whole = client.chat.completions.create(model="tiny-ko", messages=HELLO, tools=tools)
    message = whole.choices[0].message
    assert whole.choices[0].finish_reason == "tool_calls"
    assert message.content == "확인해 볼게요."
    assert message.tool_calls[0].function.name == "get_weather"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "서울"}
    chunks = list(client.chat.completions.create(model="tiny-ko", messages=HELLO, tools=tools, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "<tool_call>" not in text  # the markup never reaches the client
    streamed_calls = [t for c in chunks for t in (c.choices[0].delta.tool_calls or [])]
    assert streamed_calls[0].function.name == "get_weather" and chunks[-1].choices[0].finish_reason == "tool_calls"


def test_named_tool_choice_constrains_the_engine_to_the_arguments_schema(tiny_tokenizer, tmp_path) -> None:
    engine = ScriptedEngine(tiny_tokenizer, script=lambda *_: '{"city": "부산"}')
    server = make_inprocess(tiny_tokenizer, tmp_path, engine)
    params = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    reply = server.openai().chat.completions.create(
        model="tiny-ko", messages=HELLO, tools=[{"type": "function", "function": {"name": "f", "parameters": params}}],
        tool_choice={"type": "function", "function": {"name": "f"}})
    assert engine.calls[0].settings.structured.json_schema == params
    assert reply.choices[0].message.tool_calls[0].function.arguments == '{"city": "부산"}'


def test_json_schema_response_format_is_handed_to_the_grammar(inprocess) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    inprocess.openai().chat.completions.create(
        model="tiny-ko", messages=HELLO,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert inprocess.engine.calls[0].settings.structured.json_schema == schema


def test_completions_echo_scores_the_prompt_and_selects_the_adapter(inprocess, tiny_tokenizer) -> None:
    reply = inprocess.openai().completions.create(model="tiny-lora", prompt="서울은", echo=True, logprobs=1,
                                                  max_tokens=0)
    prompt_ids = tiny_tokenizer("서울은").input_ids
    assert reply.choices[0].text == tiny_tokenizer.decode(prompt_ids, skip_special_tokens=False)
    assert reply.choices[0].logprobs.token_logprobs[0] is None
    assert reply.choices[0].logprobs.token_logprobs[1:] == [-1.0] * (len(prompt_ids) - 1)
    assert inprocess.engine.calls[0].lora == "tiny-lora" and reply.usage.completion_tokens == 0


def test_models_list_base_and_adapter(inprocess) -> None:
    ids = [m.id for m in inprocess.openai().models.list().data]
    assert ids == ["tiny-ko", "tiny-lora"]


@pytest.mark.parametrize(("kwargs", "status", "param"), [
    ({"model": "없는-모델"}, 404, "model"),
    ({"n": 99}, 400, "n"),
    ({"max_tokens": 100_000}, 400, "messages"),
    ({"logit_bias": {"1": 500}}, 400, "logit_bias"),
    ({"logit_bias": {"999999": 5}}, 400, "logit_bias"),
    ({"extra_body": {"bogus": 1}}, 400, "bogus"),
])
def test_bad_requests_get_openai_errors(inprocess, kwargs, status, param) -> None:
    body = {"model": "tiny-ko", "messages": HELLO, **kwargs}
    with pytest.raises(openai.APIStatusError) as info:
        inprocess.openai().chat.completions.create(**body)
    assert info.value.status_code == status
    assert info.value.body["param"] == param
    assert inprocess.engine.calls == []  # nothing reached the engine


def test_unknown_v1_path_is_an_openai_404(inprocess) -> None:
    for method in ("GET", "POST", "DELETE"):
        reply = inprocess.http.request(method, "/v1/no-such-thing")
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "unknown_url"


def test_usage_record_reaches_credits_audit_and_metrics(inprocess) -> None:
    key = KeyStore(inprocess.database_url).create("행정안전부", token_quota=10_000)
    client = inprocess.openai(key)
    whole = client.chat.completions.create(model="tiny-lora", messages=HELLO, max_tokens=5, user="담당자-3")
    list(client.chat.completions.create(model="tiny-ko", messages=HELLO, max_tokens=4, stream=True))
    streamed, plain = AuditStore(inprocess.database_url).recent(2)
    assert (plain.model, plain.adapter, plain.end_user) == ("tiny-lora", "tiny-lora", "담당자-3")
    assert (plain.prompt_tokens, plain.completion_tokens) == (whole.usage.prompt_tokens, 5)
    assert (streamed.adapter, streamed.completion_tokens, streamed.status) == (None, 4, 200)
    info = KeyStore(inprocess.database_url).list()[0]
    assert info.tokens_used == plain.prompt_tokens + 5 + streamed.prompt_tokens + 4
    assert info.tokens_remaining == 10_000 - info.tokens_used
    metrics = inprocess.http.get("/metrics", headers={"Authorization": f"Bearer {key}"}).text
    assert "nexus_k_completion_tokens_total 9.0" in metrics
