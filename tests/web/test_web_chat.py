"""The chat page against a live server: streaming, stop, reload, model picker, settings, language."""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import expect

from tests.web.conftest import ADAPTER_NAME, MODEL_NAME
from tests.web.pages import (
    CONVERSATIONS_KEY,
    answer_text,
    fast_settings,
    last_message,
    send,
    storage,
    wait_answer_finished,
    wait_for_models,
)

pytestmark = pytest.mark.browser

# Records (state, visible length, send button hidden, stop button hidden) of the newest assistant message on
# every DOM change of the thread.
RECORD_GROWTH = """() => {
  window.__growth = [];
  const thread = document.getElementById("thread");
  new MutationObserver(() => {
    const message = thread.querySelector("article.assistant:last-child");
    if (!message) return;
    const body = message.querySelector(".message-body");
    const length = body.querySelector(".typing") ? 0 : body.textContent.length;
    const hidden = (id) => document.getElementById(id).hidden;
    window.__growth.push([message.dataset.state, length, hidden("send-button"), hidden("stop-button")]);
  }).observe(thread, { subtree: true, childList: true, characterData: true, attributes: true });
}"""


def test_reply_streams_completes_and_survives_reload(open_page, web_server):
    page = open_page(web_server.base_url, storage=storage(settings=fast_settings(maxTokens=200)))
    wait_for_models(page)
    page.evaluate(RECORD_GROWTH)
    with page.expect_response("**/v1/responses") as response_info:
        send(page, "안녕하세요. 여권 재발급 절차를 알려 주세요.")

    message = wait_answer_finished(page)
    expect(message).to_have_attribute("data-state", "done")
    expect(page.locator("#send-button")).to_be_visible()
    expect(page.locator("#stop-button")).to_be_hidden()

    growth = page.evaluate("window.__growth")
    # While the answer streamed, stop replaced send (recorded at each change: a fast reply may be over before
    # a locator check could see it).
    streaming = [entry for entry in growth if entry[0] == "streaming"]
    assert streaming and all(send_hidden and not stop_hidden for _, _, send_hidden, stop_hidden in streaming), growth
    streaming_lengths = [length for state, length, _, _ in growth if state == "streaming" and length > 0]
    assert len(set(streaming_lengths)) >= 2, f"the answer did not grow while streaming: {growth}"
    assert streaming_lengths == sorted(streaming_lengths)
    final = answer_text(message)
    assert final.strip()
    # Nothing lost: the page keeps exactly what the server streamed. (The rendered length is no measure: the
    # random model's gibberish can hold Markdown syntax that the final render consumes.)
    streamed = "".join(
        event.get("delta", "")
        for line in response_info.value.text().splitlines() if line.startswith("data: {")
        for event in [json.loads(line[6:])] if event["type"] == "response.output_text.delta"
    )
    stored = page.evaluate(f"() => JSON.parse(localStorage.getItem({json.dumps(CONVERSATIONS_KEY)}))")
    answers = [m for c in stored for m in c["messages"] if m["role"] == "assistant"]
    assert streamed and answers[-1]["content"] == streamed
    expect(message.locator(".message-footer .meta")).to_contain_text(re.compile(r"입력 \d+ · 출력 \d+ 토큰"))
    expect(message.locator(".message-footer .meta")).to_contain_text(ADAPTER_NAME)

    page.reload()
    expect(page.locator("#thread > article.user .message-body")).to_have_text(re.compile("여권 재발급 절차"))
    reloaded = last_message(page)
    expect(reloaded).to_have_attribute("data-state", "done")
    assert answer_text(reloaded) == final
    expect(page.locator(".conversation-open[aria-current=page]")).to_contain_text("안녕하세요. 여권 재발급")


def test_stop_aborts_the_request_on_the_server(open_page, web_server):
    page = open_page(web_server.base_url, storage=storage())

    def long_answer(route):
        # Same page request, made long enough to be stopped half-way (still the real server).
        body = json.loads(route.request.post_data)
        # (Greedy: the random model then runs to the 400-token limit on this prompt instead of stopping early.)
        route.continue_(post_data=json.dumps({**body, "max_output_tokens": 400, "temperature": 0}))

    page.route("**/v1/responses", long_answer)
    wait_for_models(page)
    send(page, "긴 보고서를 써 주세요.")
    message = last_message(page)
    expect(message.locator(".message-body .typing")).to_have_count(0, timeout=120_000)
    assert web_server.metric("nexus_k_engine_unfinished_requests") == 1

    page.locator("#stop-button").click()
    expect(message).to_have_attribute("data-state", "stopped")
    expect(message.locator(".message-footer .note")).to_have_text("사용자가 응답을 중지했습니다.")
    expect(page.locator("#send-button")).to_be_visible()
    partial = answer_text(message)
    assert partial.strip()

    deadline = time.monotonic() + 30
    while web_server.metric("nexus_k_engine_unfinished_requests") != 0:
        assert time.monotonic() < deadline, "the engine still holds the stopped request"
        time.sleep(0.2)

    page.reload()
    expect(last_message(page)).to_have_attribute("data-state", "stopped")
    assert answer_text(last_message(page)) == partial


def test_model_picker_and_settings_reach_the_request(open_page, web_server):
    page = open_page(web_server.base_url, storage=storage())
    wait_for_models(page)
    options = page.locator("#model-select option")
    expect(options).to_have_text([MODEL_NAME, f"{ADAPTER_NAME} (어댑터)"])
    # With nothing saved, the adapter served on top of the base is the default; the choice is kept.
    expect(page.locator("#model-select")).to_have_value(ADAPTER_NAME)
    page.locator("#model-select").select_option(MODEL_NAME)
    page.locator("#model-select").select_option(ADAPTER_NAME)

    page.get_by_role("button", name="설정").click()
    dialog = page.locator("#settings-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("시스템 프롬프트").fill("너는 행정 문서 전문가다.")
    dialog.locator("#temperature").fill("0.3")
    expect(dialog.locator("#temperature-value")).to_have_text("0.3")
    dialog.get_by_label("최대 응답 토큰 수").fill("3")
    dialog.get_by_role("button", name="저장").click()
    expect(dialog).to_be_hidden()

    with page.expect_request("**/v1/responses") as request_info:
        send(page, "보도자료 초안을 부탁합니다.")
    body = json.loads(request_info.value.post_data)
    assert body["model"] == ADAPTER_NAME
    assert body["temperature"] == pytest.approx(0.3)
    assert body["max_output_tokens"] == 3
    assert body["stream"] is True and body["store"] is False
    assert body["instructions"] == "너는 행정 문서 전문가다."
    assert body["input"] == [{"role": "user", "content": "보도자료 초안을 부탁합니다."}]
    message = wait_answer_finished(page)
    expect(message).to_have_attribute("data-state", "done")
    expect(message.locator(".message-footer .meta")).to_contain_text(ADAPTER_NAME)

    page.reload()
    wait_for_models(page)
    expect(page.locator("#model-select")).to_have_value(ADAPTER_NAME)
    page.get_by_role("button", name="설정").click()
    expect(page.locator("#system-prompt")).to_have_value("너는 행정 문서 전문가다.")
    expect(page.locator("#max-tokens")).to_have_value("3")


def test_language_toggle_switches_and_persists(open_page, web_server):
    page = open_page(web_server.base_url, storage=storage())
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    expect(page.locator("#composer-input")).to_have_attribute("placeholder", re.compile("메시지를 입력하세요"))
    page.locator("#lang-toggle").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#composer-input")).to_have_attribute("placeholder", re.compile("Type a message"))
    expect(page.locator("#new-chat")).to_have_text("New chat")
    expect(page.locator("#lang-toggle")).to_have_text("한국어")
    page.reload()
    expect(page.locator("#new-chat")).to_have_text("New chat")
    expect(page).to_have_title("Nexus-K Chat")
