"""Korean typing: Enter while a Hangul syllable is being composed must not send; Shift+Enter breaks lines."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.web.pages import send, storage, wait_answer_finished, wait_for_models

pytestmark = pytest.mark.browser


def count_chat_requests(page) -> list:
    """A list that grows with every chat request the page makes."""
    seen: list = []
    page.on("request", lambda request: seen.append(request) if "/v1/responses" in request.url else None)
    return seen


def test_enter_during_ime_composition_does_not_send(open_page, web_server):
    page = open_page(web_server.base_url, storage=storage())
    wait_for_models(page)
    requests = count_chat_requests(page)
    box = page.locator("#composer-input")
    box.fill("주민등록등본 발급 방법을 알려 주세")
    box.press("End")

    # A real IME composition through Chrome's own input pipeline: the Enter arrives with isComposing.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.imeSetComposition", {"text": "요", "selectionStart": 1, "selectionEnd": 1})
    page.keyboard.press("Enter")
    cdp.send("Input.insertText", {"text": "요"})  # the IME commits the syllable
    expect(box).to_have_value(re.compile(r"^주민등록등본 발급 방법을 알려 주세요\s*$"))

    # Safari reports the committing Enter after compositionend with keyCode 229 and isComposing false.
    box.dispatch_event("keydown", {"key": "Enter", "keyCode": 229, "isComposing": False})
    # Between compositionstart and compositionend, even an Enter without the flags belongs to the IME.
    box.dispatch_event("compositionstart", {"data": ""})
    box.dispatch_event("keydown", {"key": "Enter", "keyCode": 13, "isComposing": False})
    box.dispatch_event("compositionend", {"data": "요"})

    page.wait_for_timeout(300)
    assert requests == []
    expect(page.locator("#thread > article")).to_have_count(0)
    assert "알려 주세요" in box.input_value()
    assert box.input_value().count("요") == 1

    box.press("Enter")  # composition over: Enter sends, exactly once, with the whole last syllable
    expect(page.locator("#thread > article.user .message-body")).to_have_text("주민등록등본 발급 방법을 알려 주세요")
    expect(box).to_have_value("")
    wait_answer_finished(page)
    assert len(requests) == 1


def test_shift_enter_breaks_the_line_and_enter_sends(open_page, web_server):
    page = open_page(web_server.base_url, storage=storage())
    wait_for_models(page)
    requests = count_chat_requests(page)
    box = page.locator("#composer-input")
    box.click()
    page.keyboard.type("첫째 줄")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("둘째 줄")
    expect(box).to_have_value("첫째 줄\n둘째 줄")
    assert requests == []

    box.press("Enter")
    user = page.locator("#thread > article.user .message-body")
    expect(user).to_have_count(1)
    assert user.text_content() == "첫째 줄\n둘째 줄"  # the line break is kept
    wait_answer_finished(page)
    assert len(requests) == 1

    send(page, "   ")  # blank messages are not sent
    page.wait_for_timeout(300)
    assert len(requests) == 1
