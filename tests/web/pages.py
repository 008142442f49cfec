"""Helpers for driving the chat page: what it stores, how to send, how to wait for an answer."""

from __future__ import annotations

from playwright.sync_api import Locator, Page, expect

# The page's localStorage keys (serving/web/assets/store.js).
SETTINGS_KEY = "nexus-k:settings"
API_KEY_KEY = "nexus-k:api-key"
CONVERSATIONS_KEY = "nexus-k:conversations"

# Real generation on a shared 2-core machine can be slow: allow a generous wait for short answers.
ANSWER_TIMEOUT_MS = 180_000


def fast_settings(**overrides) -> dict:
    """Page settings for tests: no system prompt and very short answers."""
    return {"lang": "ko", "systemPrompt": "", "temperature": 0.7, "maxTokens": 4, **overrides}


def storage(settings: dict | None = None, api_key: str | None = None,
            conversations: list[dict] | None = None) -> dict:
    """localStorage contents to seed a page with (values are JSON-encoded by the fixture)."""
    result: dict = {SETTINGS_KEY: settings if settings is not None else fast_settings()}
    if api_key is not None:
        result[API_KEY_KEY] = api_key
    if conversations is not None:
        result[CONVERSATIONS_KEY] = conversations
    return result


def wait_for_models(page: Page) -> None:
    """Wait until the model picker is filled from /v1/models."""
    expect(page.locator("#model-select")).to_be_enabled(timeout=30_000)


def send(page: Page, text: str) -> None:
    """Type text into the message box and press Enter."""
    page.locator("#composer-input").fill(text)
    page.locator("#composer-input").press("Enter")


def last_message(page: Page) -> Locator:
    """The newest message's <article>."""
    return page.locator("#thread > article").last


def wait_answer_finished(page: Page, timeout: float = ANSWER_TIMEOUT_MS) -> Locator:
    """Wait until the newest assistant message is no longer streaming; returns it."""
    message = last_message(page)
    expect(message).to_have_class("message assistant")
    expect(message).not_to_have_attribute("data-state", "streaming", timeout=timeout)
    return message


def answer_text(message: Locator) -> str:
    """The visible text of a message's body."""
    return message.locator(".message-body").inner_text()


def conversation(cid: str, title: str, turns: list[tuple[str, str]], updated_at: int) -> dict:
    """A stored conversation in the page's own format."""
    messages = []
    for index, (question, answer) in enumerate(turns):
        messages.append({"id": f"{cid}-u{index}", "role": "user", "content": question})
        messages.append({"id": f"{cid}-a{index}", "role": "assistant", "content": answer, "state": "done"})
    return {"id": cid, "title": title, "messages": messages, "createdAt": updated_at, "updatedAt": updated_at}
