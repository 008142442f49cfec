"""Who and from where: client address (X-Forwarded-For only from trusted proxies), end user, resources."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.security.audit import AuditStore
from serving.security.auth import KeyStore
from serving.security.forwarded import TrustedProxies
from tests.serving.conftest_pg import pg_db_url, postgres_url  # noqa: F401  (fixtures)
from tests.serving.inprocess import scripted_app

MESSAGES = [{"role": "user", "content": "안녕"}]


def _client(tokenizer, url: str, peer: str, **settings) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(scripted_app(tokenizer, url, **settings), client=(peer, 40000))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh SQLite file, or a fresh database on the test PostgreSQL server."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_db_url")
    return f"sqlite:///{tmp_path / 'audit.db'}"


def _chat(client: TestClient, key: str, headers: dict[str, str] | None = None, **body) -> int:  # type: ignore[no-untyped-def]
    response = client.post("/v1/chat/completions", json={"model": "tiny-ko", "messages": MESSAGES, "max_tokens": 2,
                                                         **body},
                           headers={"Authorization": f"Bearer {key}", **(headers or {})})
    return response.status_code


def test_forwarded_headers_count_only_from_trusted_proxies(tiny_tokenizer, db_url) -> None:
    key = KeyStore(db_url).create("기관")
    spoof = {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-User": "admin", "X-Forwarded-Email": "boss@example.kr"}
    direct = _client(tiny_tokenizer, db_url, "203.0.113.9", trusted_proxies="10.0.0.0/8")
    assert _chat(direct, key, spoof, user="민원인-1") == 200
    proxied = _client(tiny_tokenizer, db_url, "10.1.2.3", trusted_proxies="10.0.0.0/8")
    assert _chat(proxied, key, {"X-Forwarded-For": "6.6.6.6, 198.51.100.7, 10.9.9.9",
                                "X-Forwarded-User": "kim.minsu"}, user="민원인-2") == 200
    assert _chat(proxied, key, {"X-Forwarded-For": "198.51.100.8", "X-Forwarded-Email": "lee@agency.go.kr"}) == 200
    assert _chat(proxied, key, user="민원인-3") == 200
    rows = list(reversed(AuditStore(db_url).recent()))
    assert [(r.client_ip, r.end_user) for r in rows] == [
        ("203.0.113.9", "민원인-1"),  # an untrusted peer's headers are ignored
        ("198.51.100.7", "kim.minsu"),  # right to left, skipping the trusted hop; the SSO user wins over `user`
        ("198.51.100.8", "lee@agency.go.kr"),
        ("10.1.2.3", "민원인-3"),  # a trusted proxy that forwards nothing: the proxy is the client
    ]


def test_refusals_are_recorded_with_the_address(tiny_tokenizer, db_url) -> None:
    KeyStore(db_url).create("기관")
    client = _client(tiny_tokenizer, db_url, "192.0.2.44")
    assert _chat(client, "nxk-wrong") == 401
    (row,) = AuditStore(db_url).recent()
    assert (row.status, row.client_ip, row.org_name) == (401, "192.0.2.44", None)


def test_resources_are_stored(tiny_tokenizer, db_url) -> None:
    from serving.usage import usage_of

    app = scripted_app(tiny_tokenizer, db_url)

    @app.get("/v1/test-touch")
    async def touch(request: __import__("fastapi").Request) -> dict:  # a stand-in for the file/batch routes
        usage_of(request.state).resources.extend(["file-abc", "vs_1"])
        return {}

    app.router.routes.insert(0, app.router.routes.pop())  # before the /v1 catch-all
    client = TestClient(app)
    assert client.get("/v1/test-touch").status_code == 200
    assert AuditStore(db_url).recent()[0].resources == ["file-abc", "vs_1"]


def test_trusted_proxies_parsing() -> None:
    proxies = TrustedProxies(["10.0.0.1", "fd00::/8"])
    assert proxies.trusts("10.0.0.1") and proxies.trusts("fd00::5") and not proxies.trusts("10.0.0.2")
    assert not proxies.trusts("testclient") and not proxies.trusts(None)
    caller = proxies.caller("fd00::5", "garbage, [2001:db8::1]:443", None, None)
    assert caller.ip == "2001:db8::1"
    assert TrustedProxies([]).caller("10.0.0.1", "1.1.1.1", "u", None).ip == "10.0.0.1"


def test_generated_answers_carry_the_ai_notice(tiny_tokenizer, db_url) -> None:
    client = TestClient(scripted_app(tiny_tokenizer, db_url))
    body = {"model": "tiny-ko", "messages": MESSAGES, "max_tokens": 2}
    for response in (client.post("/v1/chat/completions", json=body),
                     client.post("/v1/chat/completions", json={**body, "stream": True}),
                     client.post("/v1/completions", json={"model": "tiny-ko", "prompt": "안녕", "max_tokens": 2}),
                     client.post("/v1/chat/completions", json={**body, "model": "tiny-lora"})):
        assert response.status_code == 200
        assert response.headers["x-ai-generated"] == "true"
        assert response.headers["x-ai-model"] in ("tiny-ko", "tiny-lora")
    assert client.post("/v1/chat/completions", json={**body, "model": "tiny-lora"}).headers["x-ai-model"] == "tiny-lora"
    for response in (client.get("/v1/models"), client.post("/v1/chat/completions", json={**body, "n": 10_000}),
                     client.get("/health")):
        assert "x-ai-generated" not in response.headers


def test_single_sign_on_proxy_users_need_no_key(tiny_tokenizer, db_url) -> None:
    key = KeyStore(db_url).create("기관", rpm=100)
    sso = {"X-Forwarded-User": "kim.minsu", "X-Forwarded-For": "198.51.100.7"}
    proxied = _client(tiny_tokenizer, db_url, "10.1.2.3", trusted_proxies="10.0.0.0/8", sso_org="기관")
    body = {"model": "tiny-ko", "messages": MESSAGES, "max_tokens": 2}
    assert proxied.post("/v1/chat/completions", json=body, headers=sso).status_code == 200
    row = AuditStore(db_url).recent()[0]
    assert (row.org_name, row.key_prefix, row.end_user, row.client_ip) == ("기관", "sso", "kim.minsu", "198.51.100.7")
    assert proxied.get("/me", headers=sso).json() == {"user": "kim.minsu", "organisation": "기관", "via": "sso"}
    assert proxied.post("/v1/chat/completions", json=body).status_code == 401  # the proxy named nobody
    keyed = proxied.get("/me", headers={"Authorization": f"Bearer {key}"}).json()
    assert keyed == {"user": None, "organisation": "기관", "via": "key"}

    direct = _client(tiny_tokenizer, db_url, "203.0.113.9", trusted_proxies="10.0.0.0/8", sso_org="기관")
    assert direct.post("/v1/chat/completions", json=body, headers=sso).status_code == 401  # not from the proxy
    keys_only = _client(tiny_tokenizer, db_url, "10.1.2.3", trusted_proxies="10.0.0.0/8")
    assert keys_only.post("/v1/chat/completions", json=body, headers=sso).status_code == 401  # sso_org unset
    unknown = _client(tiny_tokenizer, db_url, "10.1.2.3", trusted_proxies="10.0.0.0/8", sso_org="없는기관")
    assert unknown.post("/v1/chat/completions", json=body, headers=sso).status_code == 401
