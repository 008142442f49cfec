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


# ---- the knowledge-base panel (serving/web/assets/kb-panel.js) ----

KB_FILE_TIMEOUT_MS = 180_000
"""Reading a document runs in a child process on the server: allow a loaded machine its time."""


def open_knowledge_panel(page: Page) -> Locator:
    """Open the knowledge-base dialog from the top bar; returns it."""
    page.locator("#kb-open").click()
    dialog = page.locator("#kb-dialog")
    expect(dialog).to_be_visible()
    return dialog


def create_knowledge_base(page: Page, name: str) -> None:
    """Create a knowledge base in the open panel (typed, then Enter) and wait until it is the one shown."""
    page.get_by_label("새 지식 베이스 이름").fill(name)
    page.get_by_label("새 지식 베이스 이름").press("Enter")
    expect(page.locator("#kb-detail-name")).to_have_text(name)


def drop_files(page: Page, selector: str, files: list[tuple[str, bytes, str]]) -> None:
    """Drop (name, bytes, MIME type) files on the element at selector as a user dragging them from the desktop
    would: dragenter, dragover and drop events carrying a DataTransfer of File objects."""
    import base64

    payload = [{"name": name, "data": base64.b64encode(data).decode(), "type": kind} for name, data, kind in files]
    page.evaluate(
        """([selector, files]) => {
          const zone = document.querySelector(selector);
          const transfer = new DataTransfer();
          for (const f of files) {
            const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], f.name, { type: f.type }));
          }
          for (const type of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
          }
        }""",
        [selector, payload],
    )


def kb_file_row(page: Page, filename: str) -> Locator:
    """A document's row in the open panel."""
    return page.locator("#kb-files .kb-file").filter(has=page.locator(".kb-file-name", has_text=filename))


def choose_knowledge_base(page: Page, name: str) -> None:
    """Tick a knowledge base in the composer's picker (keyboard: Space) and close it with Escape."""
    page.locator("#kb-picker-toggle").click()
    box = page.locator("#kb-picker-options").get_by_label(name, exact=True)
    box.focus()
    box.press("Space")
    expect(box).to_be_checked()
    box.press("Escape")
    expect(page.locator("#kb-picker-menu")).to_be_hidden()
