"""The Responses API in-process: the real routes, handlers and database on a scripted engine, driven by the
official ``openai`` client (``responses.create``/``stream``/``parse``/``retrieve``/``delete``/``input_items``)."""

from __future__ import annotations

import json

import openai
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from serving.security.audit import AuditStore
from serving.security.auth import KeyStore
from tests.serving.conftest_pg import pg_db_url, postgres_url  # noqa: F401  (fixtures)
from tests.serving.inprocess import make_inprocess, scripted_app
from tests.serving.scripted_engine import ScriptedEngine

REPLY = "네, 알겠습니다. 도와드리겠습니다."
WEATHER = {"type": "function", "name": "get_weather", "description": "날씨",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "서울"}}</tool_call>'


def _weather_script(prompt: str, settings, lora) -> str:
    """Call the tool until its result is in the prompt, then answer."""
    return "서울은 맑아요." if "<|im_start|>tool" in prompt else "확인해 볼게요. " + CALL


def _prompt(server, index: int = -1) -> str:
    return server.engine.tokenizer.decode(server.engine.calls[index].prompt_ids)


def test_string_input_with_instructions(inprocess, tiny_tokenizer) -> None:
    client = inprocess.openai()
    response = client.responses.create(model="tiny-ko", input="안녕하세요", instructions="존댓말로",
                                       metadata={"부서": "민원"}, safety_identifier="담당자-1")
    assert response.status == "completed" and response.output_text == REPLY
    assert response.id.startswith("resp_") and response.metadata == {"부서": "민원"}
    expected = tiny_tokenizer.apply_chat_template(
        [{"role": "system", "content": "존댓말로"}, {"role": "user", "content": "안녕하세요"}],
        tokenize=False, add_generation_prompt=True)
    assert _prompt(inprocess) == expected
    usage = response.usage
    assert usage.input_tokens == len(inprocess.engine.calls[0].prompt_ids)
    assert usage.output_tokens == len(tiny_tokenizer(REPLY, add_special_tokens=False).input_ids)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0
    [row] = AuditStore(inprocess.database_url).recent(1)
    assert (row.path, row.end_user, row.completion_tokens) == ("/v1/responses", "담당자-1", usage.output_tokens)


def test_item_input_replays_messages_and_sampling_reaches_the_engine(inprocess, tiny_tokenizer) -> None:
    items = [
        {"role": "developer", "content": "짧게"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "하나"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "둘", "annotations": [], "logprobs": []}]},
        {"role": "user", "content": "셋"},
    ]
    inprocess.openai().responses.create(model="tiny-ko", input=items, temperature=0.3, top_p=0.9,
                                        max_output_tokens=7, reasoning={"effort": "low"}, truncation="auto",
                                        include=["message.output_text.logprobs"], store=False)
    expected = tiny_tokenizer.apply_chat_template(
        [{"role": "system", "content": "짧게"}, {"role": "user", "content": "하나"},
         {"role": "assistant", "content": "둘"}, {"role": "user", "content": "셋"}],
        tokenize=False, add_generation_prompt=True)
    assert _prompt(inprocess) == expected
    settings = inprocess.engine.calls[0].settings
    assert (settings.temperature, settings.top_p, settings.max_tokens) == (0.3, 0.9, 7)


def test_stream_events_are_typed_numbered_and_match_the_stored_response(inprocess) -> None:
    client = inprocess.openai()
    events = list(client.responses.create(model="tiny-ko", input="안녕하세요", stream=True))
    types = [e.type for e in events]
    assert types[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == REPLY
    final = events[-1].response
    assert final.output_text == REPLY and final.usage.output_tokens > 0
    assert client.responses.retrieve(final.id).model_dump() == final.model_dump()


def test_responses_stream_helper_and_raw_sse_lines(inprocess) -> None:
    with inprocess.openai().responses.stream(model="tiny-ko", input="안녕하세요") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == REPLY == final.output_text
    body = inprocess.http.post("/v1/responses", json={"model": "tiny-ko", "input": "안녕", "stream": True}).text
    first = body.split("\n\n")[0].split("\n")
    assert first[0] == "event: response.created" and json.loads(first[1][len("data: "):])["sequence_number"] == 0
    assert "[DONE]" not in body


class Weather(BaseModel):
    city: str
    temperature: int


def test_parse_with_a_pydantic_model_is_enforced_by_the_grammar(tiny_tokenizer, tmp_path) -> None:
    def script(prompt, settings, lora) -> str:
        return '{"city": "부산", "temperature": 21}' if settings.structured else "아무 말"

    server = make_inprocess(tiny_tokenizer, tmp_path, ScriptedEngine(tiny_tokenizer, script=script))
    parsed = server.openai().responses.parse(model="tiny-ko", input="부산 날씨", text_format=Weather)
    assert parsed.output_parsed == Weather(city="부산", temperature=21)
    schema = server.engine.calls[0].settings.structured.json_schema
    assert set(schema["properties"]) == {"city", "temperature"}
    server.openai().responses.create(model="tiny-ko", input="json", text={"format": {"type": "json_object"}})
    assert server.engine.calls[1].settings.structured.json_object


def test_function_call_round_trip_with_previous_response_id(tiny_tokenizer, tmp_path) -> None:
    server = make_inprocess(tiny_tokenizer, tmp_path, ScriptedEngine(tiny_tokenizer, script=_weather_script))
    client = server.openai()
    first = client.responses.create(model="tiny-ko", input="서울 날씨 알려줘", tools=[WEATHER])
    message, call = first.output
    assert message.content[0].text == "확인해 볼게요." and call.type == "function_call"
    assert (call.name, json.loads(call.arguments), call.status) == ("get_weather", {"city": "서울"}, "completed")
    assert "get_weather" in _prompt(server, 0)  # the tools went into the template
    second = client.responses.create(model="tiny-ko", previous_response_id=first.id, tools=[WEATHER],
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "맑음, 21도"}])
    assert second.output_text == "서울은 맑아요." and second.previous_response_id == first.id
    prompt = _prompt(server)
    assert "서울 날씨 알려줘" in prompt and '"city": "서울"' in prompt and "맑음, 21도" in prompt
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [i.type for i in items] == ["message", "message", "function_call", "function_call_output"]
    assert items[2].call_id == call.call_id


def test_streamed_function_call_events(tiny_tokenizer, tmp_path) -> None:
    server = make_inprocess(tiny_tokenizer, tmp_path, ScriptedEngine(tiny_tokenizer, script=_weather_script))
    events = list(server.openai().responses.create(model="tiny-ko", input="서울?", tools=[WEATHER], stream=True))
    texts = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "<tool_call>" not in texts and texts.startswith("확인해 볼게요")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and json.loads(done[0].arguments) == {"city": "서울"}
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    assert added == ["message", "function_call"]
    assert events[-1].type == "response.completed" and events[-1].response.output[1].name == "get_weather"


def test_named_and_required_tool_choice_constrain_the_engine(tiny_tokenizer, tmp_path) -> None:
    def script(prompt, settings, lora) -> str:
        if settings.structured is None:
            return "도구 없이 답합니다."
        if settings.structured.json_schema.get("type") == "object":
            return '{"city": "부산"}'
        return '[{"name": "get_weather", "arguments": {"city": "대구"}}]'

    server = make_inprocess(tiny_tokenizer, tmp_path, ScriptedEngine(tiny_tokenizer, script=script))
    client = server.openai()
    named = list(client.responses.create(model="tiny-ko", input="부산", tools=[WEATHER], stream=True,
                                         tool_choice={"type": "function", "name": "get_weather"}))
    assert server.engine.calls[0].settings.structured.json_schema == WEATHER["parameters"]
    deltas = "".join(e.delta for e in named if e.type == "response.function_call_arguments.delta")
    assert deltas == '{"city": "부산"}' == named[-1].response.output[0].arguments
    required = client.responses.create(model="tiny-ko", input="대구", tools=[WEATHER], tool_choice="required",
                                       parallel_tool_calls=False)
    assert server.engine.calls[1].settings.structured.json_schema["maxItems"] == 1
    assert json.loads(required.output[0].arguments) == {"city": "대구"}
    none = client.responses.create(model="tiny-ko", input="대구", tools=[WEATHER], tool_choice="none")
    assert "get_weather" not in _prompt(server) and none.tool_choice == "none"


def test_max_output_tokens_makes_the_response_incomplete(inprocess) -> None:
    client = inprocess.openai()
    cut = client.responses.create(model="tiny-ko", input="안녕", max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output[0].status == "incomplete" and cut.usage.output_tokens == 3
    events = list(client.responses.create(model="tiny-ko", input="안녕", max_output_tokens=3, stream=True))
    assert events[-1].type == "response.incomplete" and events[-1].response.status == "incomplete"


def test_retrieve_delete_cancel_and_input_items(inprocess) -> None:
    client = inprocess.openai()
    created = client.responses.create(model="tiny-ko", input=[{"role": "user", "content": "하나"},
                                                               {"role": "user", "content": "둘"}])
    assert client.responses.retrieve(created.id).output_text == REPLY
    newest_first = client.responses.input_items.list(created.id)
    assert [i.content[0].text for i in newest_first.data] == ["둘", "하나"]
    page = client.responses.input_items.list(created.id, order="asc", limit=1)
    assert page.data[0].content[0].text == "하나" and page.has_more
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(created.id)
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    unstored = client.responses.create(model="tiny-ko", input="하나", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_another_organisation_gets_404_everywhere(inprocess) -> None:
    keys = KeyStore(inprocess.database_url)
    a, b = inprocess.openai(keys.create("org-a")), inprocess.openai(keys.create("org-b"))
    created = a.responses.create(model="tiny-ko", input="비밀")
    for attempt in (lambda: b.responses.retrieve(created.id), lambda: b.responses.delete(created.id),
                    lambda: b.responses.cancel(created.id), lambda: b.responses.input_items.list(created.id)):
        with pytest.raises(openai.NotFoundError):
            attempt()
    with pytest.raises(openai.BadRequestError) as info:
        b.responses.create(model="tiny-ko", input="다음", previous_response_id=created.id)
    assert info.value.body["code"] == "previous_response_not_found"
    assert a.responses.retrieve(created.id).id == created.id
    assert AuditStore(inprocess.database_url).recent(1)[0].org_name == "org-a"


def test_stored_responses_survive_a_restart(inprocess, tiny_tokenizer) -> None:
    created = inprocess.openai().responses.create(model="tiny-ko", input="기억해")
    with TestClient(scripted_app(tiny_tokenizer, inprocess.database_url)) as http:
        again = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)
        assert again.responses.retrieve(created.id).output_text == REPLY


def test_credits_are_reserved_and_settled(inprocess) -> None:
    key = KeyStore(inprocess.database_url).create("metered", token_quota=10_000)
    response = inprocess.openai(key).responses.create(model="tiny-ko", input="안녕", max_output_tokens=5)
    events = list(inprocess.openai(key).responses.create(model="tiny-ko", input="안녕", max_output_tokens=4,
                                                         stream=True))
    info = KeyStore(inprocess.database_url).list()[0]
    assert info.tokens_used == response.usage.total_tokens + events[-1].response.usage.total_tokens
    assert info.tokens_remaining == 10_000 - info.tokens_used


def test_truncation_auto_drops_the_oldest_turns(tiny_tokenizer, tmp_path) -> None:
    server = make_inprocess(tiny_tokenizer, tmp_path, ScriptedEngine(tiny_tokenizer, max_model_len=200))
    long = [{"role": "user", "content": "오래된 이야기 " * 30}, {"role": "assistant", "content": "네"},
            {"role": "user", "content": "새 질문"}]
    with pytest.raises(openai.BadRequestError) as info:
        server.openai().responses.create(model="tiny-ko", input=long, max_output_tokens=20)
    assert (info.value.body["code"], info.value.body["param"]) == ("context_length_exceeded", "input")
    response = server.openai().responses.create(model="tiny-ko", input=long, max_output_tokens=20,
                                                truncation="auto")
    assert response.output_text and "오래된" not in _prompt(server) and "새 질문" in _prompt(server)


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"input": "x", "bogus": 1}, "bogus", "Unrecognized request argument"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input", "call_id"),
    ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input", "not supported"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input", "text only"),
    ({"input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]}, "input",
     "No tool call found"),
    ({"input": "x", "previous_response_id": "resp_없음"}, "previous_response_id", "not found"),
    ({"input": "x", "tool_choice": "required"}, None, "requires `tools`"),
    ({"input": "x", "background": True}, None, "background"),
    ({"input": "x", "max_output_tokens": 100_000}, "input", "maximum context length"),
])
def test_bad_requests_get_openai_errors(inprocess, body, param, message) -> None:
    reply = inprocess.http.post("/v1/responses", json={"model": "tiny-ko", **body})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and message in error["message"]
    assert param is None or (error["param"] or "").startswith(param)
    assert inprocess.engine.calls == []


def test_responses_past_retention_are_gone(inprocess) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from serving.storage.db import StoredResponse, get_sessionmaker, utcnow
    from serving.storage.responses import ResponseStore

    client = inprocess.openai()
    old, fresh = (client.responses.create(model="tiny-ko", input=text) for text in ("옛날", "오늘"))
    with get_sessionmaker(inprocess.database_url).begin() as s:
        s.execute(update(StoredResponse).where(StoredResponse.id == old.id)
                  .values(created_at=utcnow() - timedelta(days=31)))
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(old.id)  # the default retention is 30 days
    assert ResponseStore(inprocess.database_url).purge(30) == 1
    assert client.responses.retrieve(fresh.id).id == fresh.id


def test_an_engine_failure_mid_stream_is_response_failed(tiny_tokenizer, tmp_path) -> None:
    def script(prompt, settings, lora) -> str:
        raise RuntimeError("engine broke")

    server = make_inprocess(tiny_tokenizer, tmp_path, ScriptedEngine(tiny_tokenizer, script=script))
    events = list(server.openai().responses.create(model="tiny-ko", input="안녕", stream=True))
    assert [e.type for e in events] == ["response.created", "response.in_progress", "response.failed"]
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error"
    [row] = AuditStore(server.database_url).recent(1)
    assert row.error_type == "server_error"
    assert server.openai().responses.retrieve(failed.id).status == "failed"


def test_output_logprobs_when_included(inprocess) -> None:
    client = inprocess.openai()
    response = client.responses.create(model="tiny-ko", input="안녕", top_logprobs=1,
                                       include=["message.output_text.logprobs"])
    logprobs = response.output[0].content[0].logprobs
    assert len(logprobs) == response.usage.output_tokens and logprobs[0].logprob == -0.5
    assert inprocess.engine.calls[0].settings.logprobs == 1
    events = list(client.responses.create(model="tiny-ko", input="안녕", top_logprobs=1, stream=True,
                                          include=["message.output_text.logprobs"]))
    streamed = [lp for e in events if e.type == "response.output_text.delta" for lp in e.logprobs]
    assert len(streamed) == events[-1].response.usage.output_tokens
    assert client.responses.create(model="tiny-ko", input="안녕").output[0].content[0].logprobs == []


def test_a_named_call_cut_by_the_token_limit_is_incomplete(tiny_tokenizer, tmp_path) -> None:
    engine = ScriptedEngine(tiny_tokenizer, script=lambda *_: '{"city": "서울특별시 종로구"}')
    server = make_inprocess(tiny_tokenizer, tmp_path, engine)
    kwargs = {"model": "tiny-ko", "input": "서울", "tools": [WEATHER], "max_output_tokens": 3,
              "tool_choice": {"type": "function", "name": "get_weather"}}
    whole = server.openai().responses.create(**kwargs)
    assert (whole.status, whole.output[0].status) == ("incomplete", "incomplete")
    events = list(server.openai().responses.create(**kwargs, stream=True))
    assert events[-1].type == "response.incomplete" and events[-1].response.output[0].status == "incomplete"


def test_the_usage_record_is_committed_before_the_final_event() -> None:
    import asyncio

    from serving.handlers.responses_stream import is_final_event
    from serving.routes.openai import event_stream
    from serving.usage import UsageRecord

    seen: list[str] = []

    async def committer() -> None:
        seen.append("commit")

    async def events():
        yield "event: response.created\ndata: {}\n\n"
        yield "event: response.completed\ndata: {}\n\n"

    async def read() -> None:
        async for chunk in event_stream(events(), UsageRecord(committer=committer), is_final_event).body_iterator:
            seen.append(chunk.split("\n")[0])

    asyncio.run(read())
    assert seen == ["event: response.created", "commit", "event: response.completed"]


def test_langchain_chat_openai_in_responses_mode(tiny_tokenizer, tmp_path) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_core.messages import ToolMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """날씨"""
        return "맑음"

    def script(prompt, settings, lora) -> str:
        if settings.structured is not None:
            return '{"city": "서울"}' if "temperature" not in json.dumps(settings.structured.json_schema) \
                else '{"city": "부산", "temperature": 21}'
        return "서울은 맑아요." if "<|im_start|>tool" in prompt else REPLY

    server = make_inprocess(tiny_tokenizer, tmp_path, ScriptedEngine(tiny_tokenizer, script=script))
    llm = langchain_openai.ChatOpenAI(model="tiny-ko", base_url="http://testserver/v1", api_key="x",
                                      http_client=server.http, use_responses_api=True, max_retries=0)
    assert llm.invoke("안녕").text == REPLY
    assert "".join(chunk.text for chunk in llm.stream("안녕")) == REPLY
    assert llm.with_structured_output(Weather, method="json_schema").invoke("부산") == Weather(city="부산",
                                                                                              temperature=21)
    asked = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("서울 날씨")
    [call] = asked.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", {"city": "서울"})
    answer = llm.bind_tools([get_weather]).invoke(["서울 날씨", asked, ToolMessage("맑음", tool_call_id=call["id"])])
    assert answer.text == "서울은 맑아요."


@pytest.mark.slow
def test_a_streamed_response_survives_kill_9(tiny_model_dir, tmp_path) -> None:
    """The response is in the database before its final event goes out: a kill -9 right after loses nothing."""
    import signal

    import httpx

    from tests.serving.test_security_processes import start_fake_servers, stop_servers

    url = f"sqlite:///{tmp_path / 'server.db'}"
    [proc], [base] = start_fake_servers(url, 1, tiny_model_dir)
    try:
        body = {"model": "tiny-ko", "input": "기억해", "stream": True}
        with httpx.stream("POST", base + "/v1/responses", json=body, timeout=60) as reply:
            lines = [line for line in reply.iter_lines() if line.startswith("data: ")]
        final = json.loads(lines[-1][len("data: "):])
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop_servers([proc])
    assert final["type"] == "response.completed"
    [proc], [base] = start_fake_servers(url, 1, tiny_model_dir)
    try:
        again = httpx.get(f"{base}/v1/responses/{final['response']['id']}", timeout=30).json()
    finally:
        stop_servers([proc])
    assert again["output"] == final["response"]["output"] and again["status"] == "completed"


def test_the_schema_documents_json_and_server_sent_events(inprocess) -> None:
    spec = inprocess.app.openapi()
    content = spec["paths"]["/v1/responses"]["post"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/event-stream"}
    assert content["application/json"]["schema"]["$ref"].endswith("/Response")
    assert content["text/event-stream"]["schema"]["required"] == ["event", "data"]  # one schema per event
    assert {"get", "delete"} <= set(spec["paths"]["/v1/responses/{response_id}"])


RRN = "900101-1234567"
PHONE = "010-2345-6789"


def test_the_pii_guard_masks_input_stored_items_and_answers(tiny_tokenizer, tmp_path) -> None:
    answer = f"담당자 연락처는 {PHONE} 입니다."
    server = make_inprocess(tiny_tokenizer, tmp_path, ScriptedEngine(tiny_tokenizer, script=lambda *_: answer))
    client = server.openai(KeyStore(server.database_url).create("org-mask", pii_guard="mask"))
    whole = client.responses.create(model="tiny-ko", input=f"제 주민번호는 {RRN} 입니다",
                                    instructions=f"문의 {PHONE}")
    seen = _prompt(server)
    assert RRN not in seen and PHONE not in seen and "[RRN]" in seen and "[PHONE]" in seen
    assert whole.output_text == answer.replace(PHONE, "[PHONE]")
    stored = json.dumps(client.responses.input_items.list(whole.id).model_dump(), ensure_ascii=False)
    assert RRN not in stored and "[RRN]" in stored  # what is kept is what the model saw
    assert client.responses.retrieve(whole.id).instructions == "문의 [PHONE]"
    events = list(client.responses.create(model="tiny-ko", input="안녕", stream=True))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == answer.replace(PHONE, "[PHONE]") == events[-1].response.output_text
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="tiny-ko", input="안녕", include=["message.output_text.logprobs"])
    assert info.value.body["code"] == "pii_guard_logprobs"
    blocked = server.openai(KeyStore(server.database_url).create("org-block", pii_guard="block"))
    with pytest.raises(openai.BadRequestError) as info:
        blocked.responses.create(model="tiny-ko", input=[{"role": "user", "content": f"번호 {PHONE}"}])
    assert (info.value.body["code"], info.value.body["param"]) == ("pii_detected", "input")


def test_the_pii_guard_masks_streamed_named_call_arguments(tiny_tokenizer, tmp_path) -> None:
    engine = ScriptedEngine(tiny_tokenizer, script=lambda *_: f'{{"city": "{PHONE}"}}')
    server = make_inprocess(tiny_tokenizer, tmp_path, engine)
    client = server.openai(KeyStore(server.database_url).create("org-mask", pii_guard="mask"))
    events = list(client.responses.create(model="tiny-ko", input="서울", tools=[WEATHER], stream=True,
                                          tool_choice={"type": "function", "name": "get_weather"}))
    assert not any(PHONE in json.dumps(e.model_dump(), ensure_ascii=False) for e in events)
    assert json.loads(events[-1].response.output[0].arguments) == {"city": "[PHONE]"}


THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}<|im_end|>\n"
    "{% endfor %}<|im_start|>assistant\n{% if enable_thinking is not defined or enable_thinking %}<think>{% endif %}"
)
THOUGHT, ANSWER = "6을 7번 더하면 42입니다.", "답은 42입니다."


@pytest.fixture
def thinking_server(tiny_tokenizer, tmp_path):  # type: ignore[no-untyped-def]
    import copy

    from serving.engines import vllm_available

    if not vllm_available():
        pytest.skip("the reasoning parsers are vLLM's")
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    tokenizer.chat_template = THINKING_TEMPLATE
    engine = ScriptedEngine(tokenizer, script=lambda *_: f"<think>{THOUGHT}</think>{ANSWER}")
    return make_inprocess(tokenizer, tmp_path, engine, reasoning_parser="deepseek_r1")


def test_thinking_becomes_a_reasoning_item_whole_and_streamed(thinking_server) -> None:
    client = thinking_server.openai()
    whole = client.responses.create(model="tiny-ko", input="6 곱하기 7은?")
    reasoning, _ = whole.output
    assert (reasoning.type, reasoning.content[0].text, whole.output_text) == ("reasoning", THOUGHT, ANSWER)
    assert 0 < whole.usage.output_tokens_details.reasoning_tokens < whole.usage.output_tokens
    events = list(client.responses.create(model="tiny-ko", input="6 곱하기 7은?", stream=True))
    assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == THOUGHT
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == ANSWER
    added = [(e.output_index, e.item.type) for e in events if e.type == "response.output_item.added"]
    assert added == [(0, "reasoning"), (1, "message")]
    final = events[-1].response
    assert [i.type for i in final.output] == ["reasoning", "message"]
    assert final.usage.output_tokens_details.reasoning_tokens == whole.usage.output_tokens_details.reasoning_tokens
    # the next turn replays the thinking to the template, and reasoning.effort "none" turns thinking off
    client.responses.create(model="tiny-ko", previous_response_id=whole.id, input="왜?", reasoning={"effort": "none"})
    prompt = _prompt(thinking_server)
    assert f"<think>{THOUGHT}</think>{ANSWER}" in prompt and not prompt.endswith("<think>")


def test_a_non_hermes_tool_call_format_in_responses(tiny_tokenizer, tmp_path) -> None:
    from serving.engines import vllm_available

    if not vllm_available():
        pytest.skip("the tool-call parsers are vLLM's")
    engine = ScriptedEngine(tiny_tokenizer, script=lambda *_: '[get_weather(city="서울")]')
    server = make_inprocess(tiny_tokenizer, tmp_path, engine, tool_call_parser="pythonic")
    client = server.openai()
    whole = client.responses.create(model="tiny-ko", input="서울?", tools=[WEATHER])
    assert [(i.type, i.name, json.loads(i.arguments)) for i in whole.output] == [
        ("function_call", "get_weather", {"city": "서울"})]
    events = list(client.responses.create(model="tiny-ko", input="서울?", tools=[WEATHER], stream=True))
    assert not [e for e in events if e.type == "response.output_text.delta"]  # the call never leaks as text
    assert events[-1].response.output[0].name == "get_weather"


@pytest.mark.postgres
def test_stored_responses_on_postgresql(request: pytest.FixtureRequest, tiny_tokenizer) -> None:
    """Replicas share PostgreSQL: one app stores, another (a restart, or a second replica) retrieves and
    continues the conversation; ownership holds there too."""
    url = request.getfixturevalue("pg_db_url")
    keys = KeyStore(url)
    a, b = keys.create("org-a"), keys.create("org-b")
    first, second = (TestClient(scripted_app(tiny_tokenizer, url)) for _ in range(2))
    with first, second:
        one, two = (openai.OpenAI(base_url="http://testserver/v1", api_key=a, http_client=h, max_retries=0)
                    for h in (first, second))
        created = one.responses.create(model="tiny-ko", input="기억해", metadata={"부서": "민원"})
        assert two.responses.retrieve(created.id).model_dump() == created.model_dump()
        follow = two.responses.create(model="tiny-ko", input="다음", previous_response_id=created.id)
        assert [i.type for i in two.responses.input_items.list(follow.id).data] == ["message"] * 3
        other = openai.OpenAI(base_url="http://testserver/v1", api_key=b, http_client=second, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(created.id)
        one.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError):
            two.responses.retrieve(created.id)


def test_a_batch_of_responses_lines_stores_them_for_the_organisation(tiny_tokenizer, tmp_path) -> None:
    from tests.serving.test_batches import read_lines, upload, wait_until

    server = make_inprocess(tiny_tokenizer, tmp_path, data_dir=tmp_path / "data")
    with server.http:
        keys = KeyStore(server.database_url)
        mine, theirs = server.openai(keys.create("org-a")), server.openai(keys.create("org-b"))
        lines = [{"custom_id": f"r-{i}", "method": "POST", "url": "/v1/responses",
                  "body": {"model": "tiny-ko", "input": f"질문 {i}", "max_output_tokens": 8}} for i in range(3)]
        batch = mine.batches.create(input_file_id=upload(mine, lines), endpoint="/v1/responses",
                                    completion_window="24h")
        done = wait_until(mine, batch.id, ("completed", "failed"))
        assert done.status == "completed", done.errors
        bodies = [line["response"]["body"] for line in read_lines(mine, done.output_file_id)]
        assert [b["object"] for b in bodies] == ["response"] * 3
        assert mine.responses.retrieve(bodies[0]["id"]).output_text == bodies[0]["output"][0]["content"][0]["text"]
        with pytest.raises(openai.NotFoundError):
            theirs.responses.retrieve(bodies[0]["id"])


def test_openai_agents_sdk_calls_the_tool_on_both_models(tiny_tokenizer, tmp_path) -> None:
    """An Agent with a function_tool, forced with ModelSettings(tool_choice=...), on OpenAIResponsesModel and
    OpenAIChatCompletionsModel, with Runner.run and Runner.run_streamed: the tool really runs."""
    agents = pytest.importorskip("agents")
    import asyncio

    import httpx

    agents.set_tracing_disabled(True)
    called: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """도시의 날씨"""
        called.append(city)
        return "맑음"

    def script(prompt, settings, lora) -> str:
        if "<|im_start|>tool" in prompt:
            return "서울은 맑아요."
        return '{"city": "서울"}' if settings.structured is not None else "안녕"

    engine = ScriptedEngine(tiny_tokenizer, script=script, max_model_len=4096)  # tool schemas make long prompts
    app = scripted_app(tiny_tokenizer, f"sqlite:///{tmp_path / 'server.db'}", engine)

    async def run() -> list[str]:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        client = openai.AsyncOpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)
        answers = []
        for model in (agents.OpenAIResponsesModel("tiny-ko", client),
                      agents.OpenAIChatCompletionsModel("tiny-ko", client)):
            agent = agents.Agent(name="민원", instructions="도와주세요", tools=[get_weather], model=model,
                                 model_settings=agents.ModelSettings(tool_choice="get_weather"))
            answers.append((await agents.Runner.run(agent, "서울 날씨?")).final_output)
            streamed = agents.Runner.run_streamed(agent, "서울 날씨?")
            async for _ in streamed.stream_events():
                pass
            answers.append(streamed.final_output)
        await http.aclose()
        return answers

    assert asyncio.run(run()) == ["서울은 맑아요."] * 4
    assert called == ["서울"] * 4


def test_a_blank_reply_is_the_same_message_whole_and_streamed(tiny_tokenizer, tmp_path) -> None:
    server = make_inprocess(tiny_tokenizer, tmp_path, ScriptedEngine(tiny_tokenizer, script=lambda *_: "\n\n"))
    whole = server.openai().responses.create(model="tiny-ko", input="안녕")
    events = list(server.openai().responses.create(model="tiny-ko", input="안녕", stream=True))
    assert whole.output_text == events[-1].response.output_text == "\n\n"


def test_a_store_failure_ends_the_stream_with_response_failed(inprocess, monkeypatch) -> None:
    from serving.storage.responses import ResponseStore

    def broken(*_args) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(ResponseStore, "_save", broken)
    events = list(inprocess.openai().responses.create(model="tiny-ko", input="안녕", stream=True))
    assert events[-1].type == "response.failed" and events[-1].response.error.code == "server_error"
    assert events[-1].response.output_text == REPLY  # what was streamed is still there


@pytest.mark.parametrize(("path", "body", "text_of"), [
    ("/v1/responses", {"input": "안녕"},
     lambda e: e.get("delta", "") if e.get("type") == "response.output_text.delta" else ""),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "안녕"}]},
     lambda e: (e["choices"][0]["delta"].get("content") or "") if e.get("choices") else ""),
])
def test_line_separators_in_the_text_do_not_split_a_streamed_event(tiny_tokenizer, tmp_path, path, body,
                                                                    text_of) -> None:
    """U+2028, U+2029 and U+0085 are line ends to ``str.splitlines`` (httpx's ``aiter_lines``): a model's
    text that holds them must still stream as whole events."""
    reply = "첫 줄\u2028둘째 줄\u2029셋째\x85끝"
    server = make_inprocess(tiny_tokenizer, tmp_path, ScriptedEngine(tiny_tokenizer, script=lambda *a: reply))
    with server.http.stream("POST", path, json={"model": "tiny-ko", "stream": True, **body}) as stream:
        lines = [line for line in stream.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    events = [json.loads(line[len("data: "):]) for line in lines]
    assert "".join(text_of(e) for e in events) == reply
