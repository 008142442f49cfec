"""Error states against real servers: server down, API key needed (401), rate limit and quota (429),
context too long (400). Each shows a clear Korean message on the answer."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.web.conftest import start_web_server
from tests.web.pages import API_KEY_KEY, last_message, send, storage, wait_answer_finished, wait_for_models

pytestmark = pytest.mark.browser


def _until_refused(base_url: str, key: str, deadline_s: float = 10.0) -> None:
    """A revocation reaches the server process within its key_version_check_s (docs/security.md): wait until it
    has, so that the page's next request is the one that sees the 401."""
    import time

    import httpx

    stop = time.monotonic() + deadline_s
    while httpx.get(base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code != 401:
        assert time.monotonic() < stop, "the revoked key still works after the documented bound"
        time.sleep(0.05)


def error_of(page):
    return last_message(page).locator(".message-error")


def test_server_down_then_retry_message(open_page, tiny_model_dir, tmp_path):
    server = start_web_server(tiny_model_dir, tmp_path / "server")
    try:
        page = open_page(server.base_url, storage=storage())
        wait_for_models(page)
    finally:
        server.stop()
    send(page, "서버가 꺼지면 어떻게 되나요?")
    message = wait_answer_finished(page)
    expect(message).to_have_attribute("data-state", "error")
    expect(error_of(page)).to_have_attribute("data-error-kind", "network")
    expect(error_of(page)).to_contain_text("서버에 연결할 수 없습니다")
    expect(message.get_by_role("button", name="다시 시도")).to_be_visible()
    expect(page.locator("#send-button")).to_be_visible()  # the page is usable again


def test_missing_key_asks_for_one_then_works(open_page, secured_server):
    page = open_page(secured_server.web.base_url, storage=storage())
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()  # /v1/models answered 401
    expect(page.locator("#banner")).to_contain_text("API 키가 없거나 올바르지 않습니다")

    expect(dialog.locator("#key-rejected")).to_be_hidden()  # no key was given yet: nothing was refused
    dialog.get_by_label("API 키").fill("nk-wrong-key")
    dialog.get_by_role("button", name="저장", exact=True).click()
    # Still 401: asked again, saying the key was refused.
    expect(dialog.locator("#key-rejected")).to_have_text("서버가 이 키를 거부했습니다. 키를 다시 확인해 주세요.")
    expect(dialog.get_by_label("API 키")).to_have_value("nk-wrong-key")
    dialog.get_by_label("API 키").fill(secured_server.key)
    dialog.get_by_role("button", name="저장", exact=True).click()
    expect(dialog).to_be_hidden()
    wait_for_models(page)
    expect(page.locator("#banner")).to_be_hidden()
    assert page.evaluate(f"JSON.parse(localStorage.getItem('{API_KEY_KEY}'))") == secured_server.key

    send(page, "인증 후 질문입니다.")
    expect(wait_answer_finished(page)).to_have_attribute("data-state", "done")


def test_revoked_key_on_send_asks_and_retries(open_page, secured_server):
    from serving.security.auth import KeyStore, key_prefix

    store = KeyStore(secured_server.web.database_url)
    doomed = store.create("폐지기관")
    page = open_page(secured_server.web.base_url, storage=storage(api_key=doomed))
    wait_for_models(page)
    store.revoke(key_prefix(doomed))
    _until_refused(secured_server.web.base_url, doomed)

    send(page, "폐기된 키로 보냅니다.")
    expect(error_of(page)).to_have_attribute("data-error-kind", "auth")
    expect(error_of(page)).to_contain_text("API 키가 없거나 올바르지 않습니다")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("API 키").fill(secured_server.key)
    dialog.get_by_role("button", name="저장", exact=True).click()
    # With a valid key saved, the failed answer is retried by itself and replaced.
    expect(page.locator("#thread .message-error")).to_have_count(0)
    expect(wait_answer_finished(page)).to_have_attribute("data-state", "done")
    expect(page.locator("#thread article.assistant")).to_have_count(1)


def test_rate_limit_says_when_to_retry(open_page, secured_server):
    # One request a minute: loading the model list uses it, so the question gets 429.
    page = open_page(secured_server.web.base_url, storage=storage(api_key=secured_server.rate_limited_key))
    wait_for_models(page)
    send(page, "연속 요청")
    expect(error_of(page)).to_have_attribute("data-error-kind", "rate")
    expect(error_of(page)).to_contain_text("요청이 너무 많습니다")
    expect(error_of(page)).to_contain_text("초 후에 다시 시도해 주세요")


def test_used_up_quota_is_explained(open_page, secured_server):
    page = open_page(secured_server.web.base_url, storage=storage(api_key=secured_server.quota_key))
    wait_for_models(page)
    send(page, "한도 초과 질문")
    expect(error_of(page)).to_have_attribute("data-error-kind", "quota")
    expect(error_of(page)).to_contain_text("사용 한도를 모두 사용했습니다")


def test_context_too_long_is_explained(open_page, web_server):
    page = open_page(web_server.base_url, storage=storage())
    wait_for_models(page)
    send(page, "행정 문서의 요약을 부탁드립니다. " * 200)  # far beyond the server's 512-token context
    expect(error_of(page)).to_have_attribute("data-error-kind", "context")
    expect(error_of(page)).to_contain_text("모델이 처리할 수 있는 길이를 넘었습니다")
    expect(error_of(page).locator(".message-error-detail")).to_contain_text("maximum context length")
