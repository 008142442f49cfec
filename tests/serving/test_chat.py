"""Chat-layer units: templates, response formats, tool-call planning and parsing (no engine, no HTTP)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from serving.chat import (
    ChatTemplateError,
    ToolPlan,
    held_back_suffix,
    messages_to_dicts,
    parse_tool_output,
    plan_output,
    render_prompt,
)
from serving.protocol import ChatCompletionRequest

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object",
                                                                        "properties": {"q": {"type": "string"}}}}}


def request(**kwargs) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "안녕"}],
                                                 **kwargs})


def test_render_prompt_uses_the_chat_template(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    req = request(messages=[{"role": "developer", "content": "존댓말"}, {"role": "user", "content": "안녕"}])
    ids = render_prompt(tok, messages_to_dicts(req))
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\n존댓말<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_model_without_template_is_a_clear_error(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        render_prompt(tok, [{"role": "user", "content": "안녕"}])


def test_plans():
    assert plan_output(request()).structured is None
    fmt = plan_output(request(response_format={"type": "json_schema",
                                               "json_schema": {"name": "x", "schema": {"type": "object"}}}))
    assert fmt.structured.json_schema == {"type": "object"}
    assert plan_output(request(response_format={"type": "json_object"})).structured.json_object
    named = plan_output(request(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "lookup"}}))
    assert named.mode == "named" and named.structured.json_schema == TOOL["function"]["parameters"]
    required = plan_output(request(tools=[TOOL], tool_choice="required", parallel_tool_calls=False))
    assert required.structured.json_schema["maxItems"] == 1
    assert plan_output(request(tools=[TOOL])).mode == "auto"


@pytest.mark.parametrize(
    "bad",
    [
        {"tool_choice": "required"},
        {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        {"top_logprobs": 3},
        {"temperature": -1},
        {"unknown_field": 1},
        {"logit_bias": {"1": 101}},
        {"logit_bias": {"a": 1}},
        {"stop": [str(i) for i in range(65)]},
        {"functions": [TOOL["function"]], "tools": [TOOL]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        {"repetition_penalty": 1e-300},  # found by fuzzing: overflowed the logits (500)
    ],
)
def test_invalid_requests_are_rejected(bad):
    with pytest.raises(ValueError):
        request(**bad)


def test_parse_named_and_required_calls():
    name, calls = parse_tool_output(ToolPlan("named", named_function="lookup"), '{"q":"서울"}')
    assert name is None and calls[0].function.name == "lookup"
    assert json.loads(calls[0].function.arguments)["q"] == "서울"
    _, calls = parse_tool_output(ToolPlan("required"), '[{"name":"lookup","arguments":{"q":"부산"}}]')
    assert json.loads(calls[0].function.arguments) == {"q": "부산"}


def test_parse_auto_tagged_calls_and_plain_text():
    text = '잠시만요. <tool_call>{"name": "lookup", "arguments": {"q": "날씨"}}</tool_call>'
    content, calls = parse_tool_output(ToolPlan("auto"), text)
    assert content == "잠시만요." and calls[0].function.name == "lookup"
    content, calls = parse_tool_output(ToolPlan("auto"), "그냥 답입니다")
    assert content == "그냥 답입니다" and calls == []
    broken = "<tool_call>{not json}</tool_call>"
    assert parse_tool_output(ToolPlan("auto"), broken) == (broken, [])


def test_held_back_suffix():
    assert held_back_suffix("안녕 <tool") == len("<tool")
    assert held_back_suffix("안녕") == 0
    assert held_back_suffix("<") == 1
