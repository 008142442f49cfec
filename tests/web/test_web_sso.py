"""The chat page behind a single-sign-on proxy: no key asked for, the signed-in person shown, answers labelled
as AI-generated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.web.conftest import WebServer, start_web_server
from tests.web.pages import fast_settings, send, storage, wait_answer_finished, wait_for_models

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def sso_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A server with keys whose loopback peer counts as a trusted proxy acting for organisation 기관."""
    from serving.security.auth import KeyStore

    workdir = tmp_path_factory.mktemp("web-sso")
    KeyStore(f"sqlite:///{workdir / 'nexus-k.db'}").create("기관")
    server = start_web_server(tiny_model_dir, workdir, trusted_proxies="127.0.0.1", sso_org="기관")
    yield server
    server.stop()


def test_signed_in_person_needs_no_key_and_answers_are_labelled(open_page, sso_server) -> None:
    page = open_page(sso_server.base_url, storage=storage(settings=fast_settings(maxTokens=20)))
    page.context.set_extra_http_headers({"X-Forwarded-User": "kim.minsu"})  # what the proxy adds
    page.reload()
    wait_for_models(page)
    expect(page.locator("#key-dialog")).to_be_hidden()
    expect(page.locator("#signed-in")).to_have_text("kim.minsu · 기관")
    send(page, "안녕하세요")
    message = wait_answer_finished(page)
    expect(message.locator(".message-footer .ai-label")).to_have_text("AI 생성 답변")
