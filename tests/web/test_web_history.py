"""Conversations kept in localStorage: list, switch, rename, delete, new chat."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.web.pages import CONVERSATIONS_KEY, conversation, storage

pytestmark = pytest.mark.browser

BUDGET = conversation("c-budget", "예산 집행 문의", [("올해 예산 집행률은?", "**87%** 입니다.")], 2_000)
STAFF = conversation("c-staff", "인사 발령 안내", [("발령 공지 초안", "- 발령일: 3월 1일\n- 대상: 5명")], 1_000)


def open_history(open_page, web_server):
    page = open_page(web_server.base_url, storage=storage(conversations=[BUDGET, STAFF]))
    expect(page.locator(".conversation")).to_have_count(2)
    return page


def saved_titles(page) -> list[str]:
    return page.evaluate(f"JSON.parse(localStorage.getItem('{CONVERSATIONS_KEY}')).map(c => c.title)")


def test_list_shows_newest_first_and_switches(open_page, web_server):
    page = open_history(open_page, web_server)
    expect(page.locator(".conversation-title")).to_have_text(["예산 집행 문의", "인사 발령 안내"])
    expect(page.locator("#empty-state")).to_be_visible()  # nothing chosen yet: a fresh chat

    page.get_by_role("button", name="인사 발령 안내", exact=True).click()
    expect(page.locator("#thread > article")).to_have_count(2)
    expect(page.locator("#thread article.user .message-body")).to_have_text("발령 공지 초안")
    expect(page.locator("#thread article.assistant li")).to_have_text(["발령일: 3월 1일", "대상: 5명"])
    expect(page.get_by_role("button", name="인사 발령 안내", exact=True)).to_have_attribute("aria-current", "page")

    page.get_by_role("button", name="예산 집행 문의", exact=True).click()
    expect(page.locator("#thread article.assistant strong")).to_have_text("87%")
    page.reload()
    expect(page.locator("#thread article.assistant strong")).to_have_text("87%")  # the choice is remembered

    page.locator("#new-chat").click()
    expect(page.locator("#empty-state")).to_be_visible()
    expect(page.locator("#thread > article")).to_have_count(0)
    expect(page.locator(".conversation-open[aria-current]")).to_have_count(0)


def test_rename_with_enter_escape_and_ime(open_page, web_server):
    page = open_history(open_page, web_server)
    page.get_by_role("button", name="이름 바꾸기: 예산 집행 문의").click()
    box = page.get_by_role("textbox", name="대화 이름")
    expect(box).to_be_focused()
    box.fill("2026년 예산")
    # Enter that commits a Hangul syllable belongs to the IME and must not finish the rename.
    box.dispatch_event("keydown", {"key": "Enter", "isComposing": True, "keyCode": 229})
    expect(box).to_be_visible()
    box.press("Enter")
    expect(page.locator(".conversation-title").first).to_have_text("2026년 예산")
    assert saved_titles(page) == ["2026년 예산", "인사 발령 안내"]

    page.get_by_role("button", name="이름 바꾸기: 인사 발령 안내").click()
    page.get_by_role("textbox", name="대화 이름").fill("버릴 이름")
    page.get_by_role("textbox", name="대화 이름").press("Escape")
    expect(page.locator(".conversation-title")).to_have_text(["2026년 예산", "인사 발령 안내"])

    page.reload()
    expect(page.locator(".conversation-title")).to_have_text(["2026년 예산", "인사 발령 안내"])


def test_delete_asks_first_and_forgets(open_page, web_server):
    page = open_history(open_page, web_server)
    page.get_by_role("button", name="인사 발령 안내", exact=True).click()

    page.get_by_role("button", name="삭제: 인사 발령 안내").click()
    dialog = page.locator("#delete-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("「인사 발령 안내」")
    dialog.get_by_role("button", name="취소").click()
    expect(page.locator(".conversation")).to_have_count(2)

    page.get_by_role("button", name="삭제: 인사 발령 안내").click()
    dialog.get_by_role("button", name="삭제").click()
    expect(page.locator(".conversation-title")).to_have_text(["예산 집행 문의"])
    expect(page.locator("#empty-state")).to_be_visible()  # the open chat was the deleted one
    assert saved_titles(page) == ["예산 집행 문의"]

    page.reload()
    expect(page.locator(".conversation-title")).to_have_text(["예산 집행 문의"])
