"""The official ``openai`` client against a live Nexus-K server, on the transformers and vLLM engines.

The model has random weights, so its text is gibberish: tests check token counts, finish reasons,
determinism, logprob consistency and structure, not wording.
"""

from __future__ import annotations

import json
import math
import time

import httpx
import jsonschema
import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.serving.conftest import thread_priorities

pytestmark = pytest.mark.slow

KO = [
    {"role": "system", "content": "당신은 친절한 도우미입니다."},
    {"role": "user", "content": "안녕하세요? 오늘 날씨 어때요?"},
]
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["예", "아니오"]}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"],
    "additionalProperties": False,
}


def test_models_lists_base_and_lora(client, live_server):
    ids = [m.id for m in client.models.list().data]
    assert ids == [live_server.model, live_server.lora]
    assert client.models.retrieve(live_server.lora).id == live_server.lora


def test_chat_greedy_is_deterministic_and_counts_tokens(client, live_server):
    first = client.chat.completions.create(model=live_server.model, messages=KO, max_tokens=12, temperature=0)
    second = client.chat.completions.create(model=live_server.model, messages=KO, max_tokens=12, temperature=0)
    assert isinstance(first, ChatCompletion)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage.completion_tokens <= 12
    if first.choices[0].finish_reason == "length":
        assert first.usage.completion_tokens == 12
    tokenized = httpx.post(f"{live_server.base_url}/tokenize", json={"messages": KO}).json()
    assert first.usage.prompt_tokens == tokenized["count"]
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens


def test_stream_matches_whole_response_and_reports_usage(client, live_server):
    whole = client.chat.completions.create(model=live_server.model, messages=KO, max_tokens=16, temperature=0)
    stream = client.chat.completions.create(model=live_server.model, messages=KO, max_tokens=16, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_seed_and_n(client, live_server):
    kwargs = dict(model=live_server.model, messages=KO, max_completion_tokens=10, temperature=1.0, seed=1234)
    a = client.chat.completions.create(**kwargs, n=2)
    b = client.chat.completions.create(**kwargs, n=2)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert a.usage.completion_tokens == b.usage.completion_tokens


def test_stop_string_cuts_the_reply(client, live_server):
    kwargs = dict(model=live_server.model, messages=KO, max_tokens=30, temperature=1.0, seed=3)
    text = client.chat.completions.create(**kwargs).choices[0].message.content
    cut = next((i for i, ch in enumerate(text) if i >= 2 and "가" <= ch <= "힣"), None)
    if cut is None:
        pytest.skip(f"sampled text has no Hangul syllable to stop on: {text!r}")
    stop = text[cut]
    stopped = client.chat.completions.create(**kwargs, stop=[stop])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[: text.index(stop)]


def test_logprobs_are_consistent_with_greedy_choice(client, live_server):
    out = client.chat.completions.create(model=live_server.model, messages=KO, max_tokens=6, temperature=0,
                                         logprobs=True, top_logprobs=3)
    entries = out.choices[0].logprobs.content
    assert len(entries) == out.usage.completion_tokens
    for entry in entries:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob <= 0
        # Greedy decoding picks the most likely token: nothing in the top list may beat it.
        assert entry.logprob >= max(t.logprob for t in entry.top_logprobs) - 0.05


def _reference_logprobs(model_dir, ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [logprobs[i - 1, ids[i]].item() for i in range(1, len(ids))]


def test_completions_echo_scores_the_prompt(client, live_server):
    prompt = "오늘도 또 우리 수탉이 막 쫓기었다."
    out = client.completions.create(model=live_server.model, prompt=prompt, max_tokens=0, echo=True, logprobs=1,
                                    temperature=0)
    assert isinstance(out, Completion)
    ids = httpx.post(f"{live_server.base_url}/tokenize", json={"prompt": prompt}).json()["tokens"]
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(ids) and lp.token_logprobs[0] is None
    assert out.choices[0].text.endswith(prompt) and out.usage.completion_tokens == 0
    reference = _reference_logprobs(live_server.model_dir, ids)
    tolerance = 1e-3 if live_server.engine == "hf" else 0.15  # vLLM on CPU runs bfloat16
    assert all(math.isfinite(x) for x in lp.token_logprobs[1:])
    assert max(abs(a - b) for a, b in zip(lp.token_logprobs[1:], reference, strict=True)) < tolerance


def test_completions_prompt_list_and_generated_logprobs(client, live_server):
    out = client.completions.create(model=live_server.model, prompt=["동백꽃", "점순이"], max_tokens=4,
                                    temperature=0, logprobs=2)
    assert [c.index for c in out.choices] == [0, 1]
    for choice in out.choices:
        assert len(choice.logprobs.token_logprobs) == len(choice.logprobs.tokens) >= 1


def test_json_schema_is_enforced(client, live_server):
    out = client.chat.completions.create(
        model=live_server.model, messages=KO, max_tokens=64, temperature=1.0, seed=7,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}},
    )
    choice = out.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    jsonschema.validate(json.loads(choice.message.content), ANSWER_SCHEMA)


def test_json_object_mode(client, live_server):
    out = client.chat.completions.create(model=live_server.model, messages=KO, max_tokens=48, temperature=0,
                                         response_format={"type": "json_object"})
    if out.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(out.choices[0].message.content), dict)
    else:  # a random model may open strings it never closes; what it wrote must still be a JSON prefix
        assert out.choices[0].message.content.startswith("{")


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "도시의 날씨",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["서울", "부산"]}, "celsius": {"type": "boolean"}},
            "required": ["city", "celsius"],
            "additionalProperties": False,
        },
    },
}


def test_named_tool_choice_produces_a_valid_call(client, live_server):
    out = client.chat.completions.create(
        model=live_server.model, messages=KO, max_tokens=64, tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])


def test_required_tool_choice_streams_a_call(client, live_server):
    stream = client.chat.completions.create(
        model=live_server.model, messages=KO, max_tokens=96, tools=[WEATHER_TOOL], tool_choice="required",
        parallel_tool_calls=False, stream=True,
    )
    calls = [tc for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER_TOOL["function"]["parameters"])


def test_lora_is_selected_by_model_name(client, live_server):
    base = client.chat.completions.create(model=live_server.model, messages=KO, max_tokens=12, temperature=0)
    tuned = client.chat.completions.create(model=live_server.lora, messages=KO, max_tokens=12, temperature=0,
                                           logprobs=True)
    assert tuned.model == live_server.lora
    base_lp = client.chat.completions.create(model=live_server.model, messages=KO, max_tokens=12, temperature=0,
                                             logprobs=True)
    differs = base.choices[0].message.content != tuned.choices[0].message.content or any(
        abs(a.logprob - b.logprob) > 0.05
        for a, b in zip(base_lp.choices[0].logprobs.content, tuned.choices[0].logprobs.content, strict=False)
    )
    assert differs, "the adapter did not change the model's output"


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"model": "no-such-model"}, 404),
        ({"temperature": 3.0}, 400),
        ({"n": 1000}, 400),
        ({"top_logprobs": 2}, 400),
        ({"extra_body": {"frobnicate": 1}}, 400),
        ({"max_tokens": 100_000}, 400),
    ],
)
def test_bad_requests_get_openai_errors(client, live_server, kwargs, status):
    params = {"model": live_server.model, "messages": KO, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(**params)
    assert info.value.status_code == status
    body = info.value.response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"} and body["error"]["message"]


def test_context_length_error_names_the_limits(client, live_server):
    long_text = "동백꽃 " * 3000
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=live_server.model, messages=[{"role": "user", "content": long_text}],
                                       max_tokens=8)
    assert info.value.code == "context_length_exceeded"
    assert "2048" in info.value.message


def test_malformed_json_is_a_400(live_server):
    r = httpx.post(f"{live_server.api}/chat/completions", content=b'{"model": "x", "messages": [',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def _metric(live_server, name: str) -> float:
    text = httpx.get(f"{live_server.base_url}/metrics").text
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.split()[-1])


def test_client_disconnect_aborts_the_engine_request(live_server):
    # As long a reply as the context allows (~2,000 tokens, ~6 s here), and the client leaves at its first token:
    # a tiny model can otherwise finish before a client starved of CPU has read a line.
    aborted_before = _metric(live_server, "nexus_k_engine_aborted_requests_total")
    body = {"model": live_server.model, "messages": KO, "stream": True, "ignore_eos": True}  # the whole context
    with httpx.stream("POST", f"{live_server.api}/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        while not next(lines).startswith("data: {"):
            pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
        _metric(live_server, "nexus_k_engine_unfinished_requests") != 0
        or _metric(live_server, "nexus_k_engine_aborted_requests_total") == aborted_before
    ):
        time.sleep(0.2)
    assert _metric(live_server, "nexus_k_engine_aborted_requests_total") == aborted_before + 1
    assert _metric(live_server, "nexus_k_engine_unfinished_requests") == 0


def test_vllm_engine_core_runs_below_the_front_end(live_server):
    # vLLM's engine core busy-waits for its worker; at the front end's priority it starved co-located clients.
    if live_server.engine != "vllm":
        pytest.skip("only vLLM has an engine-core process")
    import psutil

    server = psutil.Process(live_server.process.pid)
    cores = [p for p in server.children() if p.name().startswith("VLLM::EngineCor")]
    workers = [p for p in server.children(recursive=True) if p.name().startswith("VLLM::Worker")]
    assert cores and workers
    normal, low = frozenset({(0, 0)}), frozenset({(0, 10)})  # (SCHED_OTHER, niceness) of every thread
    assert {thread_priorities(p.pid) for p in cores} == {low}
    assert {thread_priorities(p.pid) for p in workers} == {thread_priorities(server.pid)} == {normal}


def test_tokenize_detokenize_and_metrics(live_server):
    base = live_server.base_url
    ids = httpx.post(f"{base}/tokenize", json={"prompt": "한국어 토크나이저", "add_special_tokens": False}).json()
    assert httpx.post(f"{base}/detokenize", json={"tokens": ids["tokens"]}).json()["prompt"] == "한국어 토크나이저"
    metrics = httpx.get(f"{base}/metrics").text
    assert 'nexus_k_requests_total{endpoint="/v1/chat/completions",status="200"}' in metrics
    assert "nexus_k_time_to_first_token_seconds_bucket" in metrics
