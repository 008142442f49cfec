"""The Responses API with the official ``openai`` client against a live server, on the transformers and vLLM
engines: the real engine, grammar and database. The model has random weights: tests check structure, not words."""

from __future__ import annotations

import json
from typing import Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function", "name": "get_weather", "description": "도시의 날씨",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["서울", "부산"]}},
                   "required": ["city"], "additionalProperties": False},
}


class Answer(BaseModel):
    answer: Literal["예", "아니오"]
    sure: bool


def test_whole_and_streamed_agree_and_are_stored(client, live_server) -> None:
    kwargs = {"model": live_server.model, "input": "안녕하세요?", "instructions": "짧게", "max_output_tokens": 12,
              "temperature": 0}
    whole = client.responses.create(**kwargs)
    assert whole.status in ("completed", "incomplete") and 0 < whole.usage.output_tokens <= 12
    events = list(client.responses.create(**kwargs, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == f"response.{whole.status}"
    final = events[-1].response
    assert final.output_text == whole.output_text and final.usage.output_tokens == whole.usage.output_tokens
    assert client.responses.retrieve(whole.id).output_text == whole.output_text
    client.responses.delete(whole.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(whole.id)


def test_parse_is_enforced_by_the_grammar(client, live_server) -> None:
    parsed = client.responses.parse(model=live_server.model, input="확실해요?", text_format=Answer,
                                    max_output_tokens=64, temperature=1.0)
    assert parsed.status == "completed" and isinstance(parsed.output_parsed, Answer)


def test_forced_function_call_round_trip(client, live_server) -> None:
    first = client.responses.create(model=live_server.model, input="서울 날씨?", tools=[WEATHER],
                                    tool_choice={"type": "function", "name": "get_weather"},
                                    max_output_tokens=64)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    second = client.responses.create(model=live_server.model, previous_response_id=first.id, tools=[WEATHER],
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "맑음"}], max_output_tokens=8)
    assert second.usage.input_tokens > first.usage.input_tokens and second.previous_response_id == first.id
