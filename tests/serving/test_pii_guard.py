"""The live PII guard per organisation: block refuses naming the kinds, mask hides personal data from the model
(seen through completions' echo) and from answers (streamed across chunk boundaries too); counts in the audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from nexus_k.cli import app as cli_app
from serving.security.audit import AuditStore
from serving.security.auth import KeyStore
from tests.serving.conftest_pg import pg_db_url, postgres_url  # noqa: F401  (fixtures)
from tests.serving.inprocess import scripted_app
from tests.serving.scripted_engine import ScriptedEngine

RRN = "900101-1234567"
PHONE = "010-2345-6789"
REPLY = f"담당자 연락처는 {PHONE} 이고 메일은 kim@agency.go.kr 입니다."


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh SQLite file, or a fresh database on the test PostgreSQL server."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_db_url")
    return f"sqlite:///{tmp_path / 'guard.db'}"


@pytest.fixture
def server(tiny_tokenizer, db_url):  # type: ignore[no-untyped-def]
    engine = ScriptedEngine(tiny_tokenizer, max_model_len=1024, script=lambda *_: REPLY)
    return TestClient(scripted_app(tiny_tokenizer, db_url, engine)), engine


def _key(db_url: str, mode: str) -> dict[str, str]:
    key = KeyStore(db_url).create(f"org-{mode}", pii_guard=mode)
    return {"Authorization": f"Bearer {key}"}


def _chat(client: TestClient, headers: dict[str, str], content: str, **body):  # type: ignore[no-untyped-def]
    return client.post("/v1/chat/completions", headers=headers,
                       json={"model": "tiny-ko", "messages": [{"role": "user", "content": content}],
                             "max_tokens": 200, **body})


def _stream_text(response) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    pieces = []
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            event = json.loads(line[6:])
            for choice in event.get("choices", []):
                piece = choice.get("delta", {}).get("content") if "delta" in choice else choice.get("text")
                if piece:
                    pieces.append(piece)
    return "".join(pieces), pieces


def test_block_refuses_naming_kinds_never_values(server, db_url) -> None:
    client, engine = server
    headers = _key(db_url, "block")
    refused = _chat(client, headers, f"제 주민번호는 {RRN}, 번호 {PHONE} 입니다")
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "pii_detected" and error["param"] == "messages"
    assert "resident registration number (rrn)" in error["message"] and "phone number" in error["message"]
    assert RRN not in refused.text and PHONE not in refused.text
    assert engine.calls == []
    row = AuditStore(db_url).recent()[0]
    assert (row.status, row.pii_counts) == (400, {"rrn": 1, "phone": 1})

    fine = _chat(client, headers, "민원 처리 절차를 알려주세요")
    assert fine.status_code == 200
    assert PHONE not in fine.text and "[PHONE]" in fine.json()["choices"][0]["message"]["content"]  # answers masked

    completion = client.post("/v1/completions", headers=headers,
                             json={"model": "tiny-ko", "prompt": "카드 4111-1111-1111-1111", "max_tokens": 2})
    assert completion.status_code == 400 and completion.json()["error"]["param"] == "prompt"


def test_mask_hides_prompt_from_model_and_answers(server, db_url, tiny_tokenizer) -> None:
    client, engine = server
    headers = _key(db_url, "mask")
    answer = _chat(client, headers, f"제 주민번호는 {RRN} 입니다")
    assert answer.status_code == 200
    seen = tiny_tokenizer.decode(engine.calls[-1].prompt_ids)
    assert RRN not in seen and "[RRN]" in seen
    content = answer.json()["choices"][0]["message"]["content"]
    assert content == REPLY.replace(PHONE, "[PHONE]").replace("kim@agency.go.kr", "[EMAIL]")
    row = AuditStore(db_url).recent()[0]
    assert row.pii_counts == {"rrn": 1, "phone": 1, "email": 1}

    streamed = _chat(client, headers, "안녕", stream=True)
    text, pieces = _stream_text(streamed)
    assert text == content and len(pieces) > 3
    assert PHONE not in streamed.text and "kim@" not in streamed.text
    assert not any(part in piece for piece in pieces for part in ("2345", "6789"))  # no half of it in a chunk


def test_mask_through_completions_echo_and_stream(server, db_url) -> None:
    client, _ = server
    headers = _key(db_url, "mask")
    body = {"model": "tiny-ko", "prompt": f"연락처 {PHONE} 로 연락", "max_tokens": 200, "echo": True}
    echoed = client.post("/v1/completions", headers=headers, json=body)
    assert echoed.status_code == 200
    text = echoed.json()["choices"][0]["text"]
    assert text.startswith("연락처 [PHONE] 로 연락") and PHONE not in text and "[EMAIL]" in text

    streamed = client.post("/v1/completions", headers=headers, json={**body, "stream": True})
    joined, _ = _stream_text(streamed)
    assert joined == text and PHONE not in streamed.text


def test_off_changes_nothing(server, db_url) -> None:
    client, _ = server
    answer = _chat(client, _key(db_url, "off"), f"번호 {PHONE}")
    assert PHONE in answer.json()["choices"][0]["message"]["content"]
    assert AuditStore(db_url).recent()[0].pii_counts is None


def test_keys_cli_sets_the_guard(db_url) -> None:
    runner = CliRunner()
    created = runner.invoke(cli_app, ["keys", "create", "--org", "세무서", "--pii-guard", "mask",
                                      "--database-url", db_url])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert KeyStore(db_url).authenticate(key).pii_guard == "mask"
    updated = runner.invoke(cli_app, ["keys", "update", "--org", "세무서", "--pii-guard", "block",
                                      "--database-url", db_url])
    assert updated.exit_code == 0, updated.output
    assert KeyStore(db_url).authenticate(key).pii_guard == "block"
    actions = [r.path for r in AuditStore(db_url).recent() if r.method == "CLI"]  # on record, in the chain
    assert actions[0] == "nexus-k keys update --org 세무서 --pii-guard block"
    assert actions[1].startswith("nexus-k keys create --org 세무서 --pii-guard mask: key nxk-")
    assert key not in actions[1]
    listed = runner.invoke(cli_app, ["keys", "list", "--database-url", db_url], env={"COLUMNS": "250"})
    assert "block" in listed.stdout
    bad = runner.invoke(cli_app, ["keys", "update", "--org", "세무서", "--pii-guard", "maybe",
                                  "--database-url", db_url])
    assert bad.exception is not None and "--pii-guard" in str(bad.exception)


def test_mask_covers_tool_call_arguments(tiny_tokenizer, db_url) -> None:
    call = f'<tool_call>{{"name": "notify", "arguments": {{"phone": "{PHONE}"}}}}</tool_call>'
    engine = ScriptedEngine(tiny_tokenizer, max_model_len=1024, script=lambda *_: "보낼게요. " + call)
    client = TestClient(scripted_app(tiny_tokenizer, db_url, engine))
    headers = _key(db_url, "mask")
    tools = [{"type": "function", "function": {"name": "notify", "parameters": {
        "type": "object", "properties": {"phone": {"type": "string"}}}}}]
    for stream in (False, True):
        response = _chat(client, headers, "알려 주세요", tools=tools, stream=stream)
        assert response.status_code == 200 and PHONE not in response.text
        if not stream:
            arguments = response.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
            assert json.loads(arguments) == {"phone": "[PHONE]"}


def test_answer_logprobs_are_refused_under_the_guard_but_prompt_scoring_is_not(server, db_url) -> None:
    client, _ = server
    headers = _key(db_url, "mask")
    refused = _chat(client, headers, "안녕", logprobs=True, top_logprobs=2)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "pii_guard_logprobs"
    scoring = client.post("/v1/completions", headers=headers, json={
        "model": "tiny-ko", "prompt": f"번호 {PHONE}", "max_tokens": 0, "echo": True, "logprobs": 1})
    assert scoring.status_code == 200 and PHONE not in scoring.text  # logprobs over the masked prompt


@pytest.mark.skipif(not __import__("serving.engines", fromlist=["x"]).vllm_available(),
                    reason="the reasoning parsers are vLLM's")
def test_mask_covers_the_thinking(tiny_tokenizer, tmp_path: Path) -> None:
    import copy

    from tests.serving.inprocess import make_inprocess

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "<|im_start|>assistant\n<think>")
    reply = f"<think>고객 번호는 {PHONE} 이다.</think>연락드리겠습니다."
    server = make_inprocess(tokenizer, tmp_path, ScriptedEngine(tokenizer, script=lambda *_: reply),
                            reasoning_parser="deepseek_r1")
    headers = _key(server.database_url, "mask")
    whole = _chat(server.http, headers, "안녕")
    assert whole.json()["choices"][0]["message"]["reasoning_content"] == "고객 번호는 [PHONE] 이다."
    streamed = _chat(server.http, headers, "안녕", stream=True)
    thoughts = "".join(json.loads(line[6:])["choices"][0]["delta"].get("reasoning_content") or ""
                       for line in streamed.text.splitlines()
                       if line.startswith("data: {") and json.loads(line[6:])["choices"])
    assert thoughts == "고객 번호는 [PHONE] 이다." and PHONE not in streamed.text


def test_guard_on_embeddings_and_rerank(tiny_tokenizer, tmp_path: Path) -> None:
    from tests.serving.inprocess import EMBED_MODEL, make_inprocess
    from tests.serving.scripted_engine import CharacterEmbedder

    embedder = CharacterEmbedder(tiny_tokenizer)
    server = make_inprocess(tiny_tokenizer, tmp_path, embedder=embedder)
    masked, blocked = _key(server.database_url, "mask"), _key(server.database_url, "block")
    text = f"민원인 연락처 {PHONE}"
    ok = server.http.post("/v1/embeddings", headers=masked, json={"model": EMBED_MODEL, "input": [text, "안녕"]})
    assert ok.status_code == 200
    seen = [tiny_tokenizer.decode(ids) for ids in embedder.calls[-1]]
    assert "[PHONE]" in seen[0] and PHONE not in seen[0]
    ids = tiny_tokenizer(text, add_special_tokens=False).input_ids
    as_ids = server.http.post("/v1/embeddings", headers=masked, json={"model": EMBED_MODEL, "input": [ids, [5, 6]]})
    assert as_ids.status_code == 200 and PHONE not in tiny_tokenizer.decode(embedder.calls[-1][0])
    refused = server.http.post("/v1/embeddings", headers=blocked, json={"model": EMBED_MODEL, "input": text})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "pii_detected"
    ranked = server.http.post("/v1/rerank", headers=masked, json={
        "model": EMBED_MODEL, "query": "연락처", "documents": [text, "날씨"]})
    assert ranked.status_code == 200 and PHONE not in ranked.text and "[PHONE]" in ranked.text
