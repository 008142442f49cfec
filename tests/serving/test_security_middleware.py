"""The security middleware around the real app on a scripted engine: keys, limits, credits, audit, body checks."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.chat import render_prompt
from serving.security.audit import AuditStore
from serving.security.auth import KeyStore
from tests.serving.inprocess import scripted_app
from tests.serving.scripted_engine import ScriptedEngine, default_script

MESSAGES = [{"role": "user", "content": "안녕"}]
PHONE_REPLY = "연락처는 010-1234-5678 입니다"


def prompt_tokens(tokenizer) -> int:  # type: ignore[no-untyped-def]
    """Tokens of ``MESSAGES`` after the chat template: what the server counts and charges."""
    return len(render_prompt(tokenizer, MESSAGES))


def make_app(tokenizer, database_url: str, audit_content: bool = False, max_request_bytes: int = 10_000,
             reply: str | None = None) -> FastAPI:  # type: ignore[no-untyped-def]
    """The real server (routes, handlers, security middleware) on a scripted engine, 1,024-token context."""
    engine = ScriptedEngine(tokenizer, max_model_len=1024,
                            script=(lambda *_: reply) if reply is not None else default_script)
    return scripted_app(tokenizer, database_url, engine, audit_content=audit_content,
                        max_request_bytes=max_request_bytes)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'security.db'}"


@pytest.fixture
def client(db_url: str, tiny_tokenizer) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(make_app(tiny_tokenizer, db_url))


def chat(client: TestClient, key: str | None = None, **body) -> object:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post("/v1/chat/completions", json={"model": "tiny-ko", "messages": MESSAGES, **body},
                       headers=headers)


def test_open_until_the_first_key_then_every_route_but_health_and_page_needs_one(client, db_url) -> None:
    assert chat(client, "anything").status_code == 200  # no keys yet: loopback development mode
    key = KeyStore(db_url).create("행정안전부")
    for path in ("/v1/models", "/metrics"):
        missing = client.get(path)
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key"
        assert missing.headers["www-authenticate"] == "Bearer"
        assert client.get(path, headers={"Authorization": "Bearer nxk-wrong"}).status_code == 401
        assert client.get(path, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/").status_code == 200
    assert client.post("/", json={}).status_code == 401  # only GET of the page is open
    assert chat(client, key).status_code == 200
    assert client.get("/v1/models", headers={"Authorization": f"Basic {key}"}).status_code == 401


def test_revoked_key_is_refused_and_server_stays_closed(client, db_url) -> None:
    store = KeyStore(db_url)
    key = store.create("a")
    assert chat(client, key).status_code == 200
    store.revoke(key[:12])
    assert chat(client, key).status_code == 401
    assert chat(client).status_code == 401  # revoking every key does not open the server


def test_keys_are_stored_hashed(db_url, tmp_path) -> None:
    key = KeyStore(db_url).create("a")
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("security.db*"))
    assert key.encode() not in raw
    assert key[4:].encode() not in raw
    assert key[:12].encode() in raw  # the visible prefix


def test_rate_limit_gives_429_with_retry_after(client, db_url) -> None:
    key = KeyStore(db_url).create("a", rpm=3)
    assert [chat(client, key).status_code for _ in range(3)] == [200, 200, 200]
    before = time.time()
    refused = chat(client, key)
    after = time.time()
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    # This minute already holds rpm requests (none before it): retry at the start of the next minute.
    assert int(refused.headers["retry-after"]) in range(
        max(1, math.ceil(60 - after % 60)), max(1, math.ceil(60 - before % 60)) + 1
    )
    other = KeyStore(db_url).create("b", rpm=3)
    assert chat(client, other).status_code == 200  # limits are per organisation


def test_credits_are_reserved_then_settled_to_real_usage(client, db_url, tiny_tokenizer) -> None:
    prompt = prompt_tokens(tiny_tokenizer)
    store = KeyStore(db_url)
    key = store.create("a", token_quota=200)
    ok = chat(client, key, max_tokens=10)
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == prompt
    info = store.list()[0]
    assert info.tokens_used == prompt + 10
    assert info.tokens_remaining == 200 - prompt - 10
    streamed = chat(client, key, max_tokens=5, stream=True)
    assert streamed.text.endswith("data: [DONE]\n\n")
    assert store.list()[0].tokens_remaining == 200 - 2 * prompt - 15
    # A request that could use more than what is left is refused before the engine runs, OpenAI-style: the
    # reservation is the exact prompt plus n x max_tokens (here 3 x 40 > what is left).
    calls = len(client.app.state.nexus.engine.calls)
    refused = chat(client, key, max_tokens=40, n=3)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "insufficient_quota"
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert str(prompt + 120) in refused.json()["error"]["message"]
    assert len(client.app.state.nexus.engine.calls) == calls
    assert store.list()[0].tokens_remaining == 200 - 2 * prompt - 15  # refusals cost nothing
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_audit_row_per_request_without_content_by_default(client, db_url, tiny_tokenizer) -> None:
    key = KeyStore(db_url).create("a", rpm=100)
    chat(client, key, max_tokens=3, user="민원인-17")
    chat(client, "nxk-bad")
    rows = AuditStore(db_url).recent()
    assert [r.status for r in rows] == [401, 200]
    ok = rows[1]
    assert (ok.org_name, ok.model, ok.prompt_tokens, ok.completion_tokens) == (
        "a", "tiny-ko", prompt_tokens(tiny_tokenizer), 3)
    assert (ok.adapter, ok.end_user) == (None, "민원인-17")
    assert ok.latency_ms > 0 and ok.key_prefix == key[:12] and ok.path == "/v1/chat/completions"
    assert ok.prompt_text is None and ok.reply_text is None
    assert rows[0].org_name is None and rows[0].error_type == "invalid_request_error"


def test_audit_content_is_redacted(db_url, tiny_tokenizer) -> None:
    client = TestClient(make_app(tiny_tokenizer, db_url, audit_content=True, reply=PHONE_REPLY))
    chat(client, messages=[{"role": "user", "content": "제 번호는 900101-1234567, 메일 kim@example.go.kr"}])
    chat(client, stream=True, max_tokens=9)
    streamed, plain = AuditStore(db_url).recent()
    assert "900101-1234567" not in plain.prompt_text and "kim@example.go.kr" not in plain.prompt_text
    assert plain.prompt_text.startswith("user: ") and "[RRN]" in plain.prompt_text and "[EMAIL]" in plain.prompt_text
    assert plain.reply_text == "연락처는 [PHONE] 입니다"
    assert plain.pii_counts["phone"] == 1 and plain.pii_counts["rrn"] == 1
    first_nine = tiny_tokenizer.decode(tiny_tokenizer(PHONE_REPLY, add_special_tokens=False).input_ids[:9])
    assert streamed.reply_text == first_nine and streamed.completion_tokens == 9


def test_oversized_body_is_413_by_header_and_by_stream(client, db_url) -> None:
    big = {"messages": [{"role": "user", "content": "가" * 5000}]}
    assert client.post("/v1/chat/completions", json=big).status_code == 413

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}]}'

    chunked = client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert chunked.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "invalid_utf8"),
        (b'{"messages": ' + b"[" * 500 + b"]" * 500 + b"}", "json_too_deep"),
        (b'{"a": ' + b'{"b": ' * 100 + b"1" + b"}" * 101, "json_too_deep"),
    ],
)
def test_bad_bodies_are_clean_400(client, body, code) -> None:
    response = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


def test_brackets_inside_strings_do_not_count_as_depth(client) -> None:
    text = "[" * 300 + "{" * 300
    assert chat(client, messages=[{"role": "user", "content": text}]).status_code == 200
