"""The chat page on the Responses API: every conversation goes to POST /v1/responses (streamed typed events);
"대화를 서버에 저장" off keeps nothing on the server and resends the history, on stores each answer, continues
with previous_response_id and deletes them with the conversation; a reasoning model's thinking is folded away."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import ANSWER, THOUGHT
from tests.web.pages import (
    CONVERSATIONS_KEY,
    answer_text,
    fast_settings,
    send,
    storage,
    wait_answer_finished,
    wait_for_models,
)

pytestmark = pytest.mark.browser


def record_posts(page: Page) -> list[tuple[str, dict]]:
    """Every POST the page makes from now on: (path, JSON body)."""
    posts: list[tuple[str, dict]] = []

    def on_request(request) -> None:  # type: ignore[no-untyped-def]
        if request.method == "POST":
            path = request.url.split("//", 1)[1].split("/", 1)[1].split("?")[0]
            posts.append(("/" + path, json.loads(request.post_data or "null")))

    page.on("request", on_request)
    return posts


def stored_messages(page: Page) -> list[dict]:
    """The messages of the newest conversation as the page keeps them in localStorage."""
    conversations = page.evaluate(f"() => JSON.parse(localStorage.getItem({json.dumps(CONVERSATIONS_KEY)}))")
    return conversations[0]["messages"]


def ask(page: Page, text: str) -> None:
    send(page, text)
    expect(wait_answer_finished(page)).to_have_attribute("data-state", "done")


def retrieve(base_url: str, response_id: str) -> httpx.Response:
    return httpx.get(f"{base_url}/v1/responses/{response_id}", timeout=30)


# Greedy decoding: the random model's short answers are the same on every run (and not blank).
GREEDY = fast_settings(temperature=0, maxTokens=8)


def test_conversation_streams_over_responses_and_keeps_nothing_by_default(open_page, web_server):
    page = open_page(web_server.base_url, storage=storage(settings=GREEDY))
    wait_for_models(page)
    posts = record_posts(page)
    with page.expect_response("**/v1/responses") as first_info:
        ask(page, "주민등록등본은 어디서 떼나요?")
    first = first_info.value
    assert first.headers["content-type"].startswith("text/event-stream")
    events = [line[len("event: "):] for line in first.text().splitlines() if line.startswith("event: ")]
    assert events[0] == "response.created" and events[-1] in ("response.completed", "response.incomplete")
    streamed = "".join(
        json.loads(line[len("data: "):]).get("delta", "")
        for line in first.text().splitlines()
        if line.startswith("data: ") and json.loads(line[len("data: "):])["type"] == "response.output_text.delta"
    )
    answers = [m for m in stored_messages(page) if m["role"] == "assistant"]
    assert answers[-1]["content"] == streamed and answers[-1]["stored"] is False

    ask(page, "온라인으로도 되나요?")
    assert [path for path, _ in posts] == ["/v1/responses", "/v1/responses"]  # never /v1/chat/completions
    bodies = [body for _, body in posts]
    assert all(body["stream"] is True and body["store"] is False for body in bodies)
    assert all("previous_response_id" not in body for body in bodies)
    # Nothing is kept on the server, so each turn carries the whole conversation as input items.
    assert bodies[0]["input"] == [{"role": "user", "content": "주민등록등본은 어디서 떼나요?"}]
    assert bodies[1]["input"] == [
        {"role": "user", "content": "주민등록등본은 어디서 떼나요?"},
        {"role": "assistant", "content": streamed},
        {"role": "user", "content": "온라인으로도 되나요?"},
    ]
    ids = [m["responseId"] for m in stored_messages(page) if m["role"] == "assistant"]
    assert len(ids) == 2 and all(ids)
    for response_id in ids:
        assert retrieve(web_server.base_url, response_id).status_code == 404


def test_store_toggle_keeps_answers_continues_them_and_deletes_them(open_page, web_server):
    page = open_page(web_server.base_url, storage=storage(settings=GREEDY))
    wait_for_models(page)
    expect(page.locator("#empty-body")).to_contain_text("이 브라우저에만 저장됩니다")
    page.get_by_role("button", name="설정").click()
    dialog = page.locator("#settings-dialog")
    toggle = dialog.get_by_label("대화를 서버에 저장")
    expect(toggle).not_to_be_checked()  # off unless the user opts in
    toggle.check()
    dialog.get_by_role("button", name="저장").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#empty-body")).to_contain_text("이 브라우저와 서버에 저장됩니다")

    posts = record_posts(page)
    ask(page, "건축 허가 절차를 알려 주세요.")
    ask(page, "기간은 얼마나 걸리나요?")
    first_id, second_id = (m["responseId"] for m in stored_messages(page) if m["role"] == "assistant")
    assert all(m["stored"] for m in stored_messages(page) if m["role"] == "assistant")

    bodies = [body for path, body in posts if path == "/v1/responses"]
    assert len(bodies) == 2 and all(body["store"] is True for body in bodies)
    assert bodies[0]["input"] == [{"role": "user", "content": "건축 허가 절차를 알려 주세요."}]
    assert "previous_response_id" not in bodies[0]
    # The second turn continues the stored response instead of resending the history.
    assert bodies[1]["previous_response_id"] == first_id
    assert bodies[1]["input"] == [{"role": "user", "content": "기간은 얼마나 걸리나요?"}]

    stored = retrieve(web_server.base_url, second_id)
    assert stored.status_code == 200, stored.text
    assert stored.json()["previous_response_id"] == first_id and stored.json()["store"] is True
    assert retrieve(web_server.base_url, first_id).status_code == 200

    # The setting survives a reload.
    page.reload()
    page.get_by_role("button", name="설정").click()
    expect(page.locator("#settings-dialog").get_by_label("대화를 서버에 저장")).to_be_checked()
    page.locator("#settings-dialog").get_by_role("button", name="취소").click()

    # Deleting the conversation deletes its stored responses on the server.
    with page.expect_request(lambda r: r.method == "DELETE" and r.url.endswith(first_id)):
        page.get_by_role("button", name="삭제: 건축 허가 절차를 알려 주세요.").click()
        page.locator("#delete-dialog").get_by_role("button", name="삭제").click()
    expect(page.locator("#conversation-list li")).to_have_count(0)
    deadline = time.monotonic() + 30
    while {retrieve(web_server.base_url, i).status_code for i in (first_id, second_id)} != {404}:
        assert time.monotonic() < deadline, "the stored responses are still on the server"
        time.sleep(0.3)


def test_continuing_a_response_the_server_no_longer_has_resends_the_history(open_page, web_server):
    page = open_page(web_server.base_url, storage=storage(settings={**GREEDY, "storeOnServer": True}))
    wait_for_models(page)
    ask(page, "첫 질문입니다.")
    (first_id,) = (m["responseId"] for m in stored_messages(page) if m["role"] == "assistant")
    assert httpx.delete(f"{web_server.base_url}/v1/responses/{first_id}", timeout=30).status_code == 200

    posts = record_posts(page)
    ask(page, "두 번째 질문입니다.")
    bodies = [body for path, body in posts if path == "/v1/responses"]
    assert bodies[0]["previous_response_id"] == first_id  # answered previous_response_not_found
    assert "previous_response_id" not in bodies[1] and bodies[1]["store"] is True
    assert [item["role"] for item in bodies[1]["input"]] == ["user", "assistant", "user"]
    expect(page.locator("#thread .message-error")).to_have_count(0)


def test_thinking_is_folded_away_above_the_answer(open_page, thinking_server):
    page = open_page(thinking_server.base_url, storage=storage(settings=fast_settings(maxTokens=None)))
    wait_for_models(page)
    with page.expect_response("**/v1/responses") as info:
        send(page, "여권을 다시 만들려면 무엇이 필요한가요?")
    message = wait_answer_finished(page)
    expect(message).to_have_attribute("data-state", "done")
    assert "response.reasoning_text.delta" in info.value.text()

    thinking = message.locator("details.thinking")
    expect(thinking).to_have_count(1)
    expect(thinking.locator("summary")).to_have_text("생각 과정")
    expect(thinking).not_to_have_attribute("open", "")  # folded away by default
    expect(thinking.locator(".thinking-body")).to_be_hidden()
    assert answer_text(message).strip() == ANSWER  # the thinking is not part of the answer
    assert message.locator(".message-main > :is(details.thinking, .message-body)").evaluate_all(
        "nodes => nodes.map(n => n.tagName)") == ["DETAILS", "DIV"]  # above the answer
    expect(message.locator(".message-footer .ai-label")).to_have_text("AI 생성 답변")

    thinking.locator("summary").click()
    expect(thinking.locator(".thinking-body")).to_be_visible()
    expect(thinking.locator(".thinking-body")).to_have_text(THOUGHT)

    # After a reload the thinking is kept, folded away again.
    page.reload()
    reloaded = page.locator("#thread > article.assistant").last
    expect(reloaded.locator("details.thinking .thinking-body")).to_be_hidden()
    expect(reloaded.locator("details.thinking .thinking-body")).to_have_text(THOUGHT)
    assert answer_text(reloaded).strip() == ANSWER


def typed_events(*events: tuple[str, dict]) -> str:
    """A Responses stream body: ``event: <type>`` / ``data: <json>`` pairs."""
    return "".join(
        f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': n, **fields}, ensure_ascii=False)}\n\n"
        for n, (kind, fields) in enumerate(events))


STARTED = (("response.created", {"response": {"id": "resp_web", "status": "in_progress", "output": []}}),
           ("response.output_text.delta", {"item_id": "msg_web", "output_index": 0, "delta": "일부 답변"}))


@pytest.mark.parametrize(("ending", "kind", "shown"), [
    ((("response.failed", {"response": {"id": "resp_web", "status": "failed", "error": {
        "code": "server_error", "message": "The server had an error while processing your request."}}}),),
     "server", "서버에서 오류가 발생했습니다"),
    ((), "interrupted", "응답이 중간에 끊겼습니다"),
], ids=["response.failed", "cut-off"])
def test_a_failed_or_cut_off_stream_keeps_the_text_and_says_so(open_page, web_server, ending, kind, shown):
    page = open_page(web_server.base_url, storage=storage())
    wait_for_models(page)
    page.route("**/v1/responses", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=typed_events(*STARTED, *ending)))
    send(page, "오류가 나면 어떻게 보이나요?")
    message = wait_answer_finished(page)
    expect(message).to_have_attribute("data-state", "error")
    expect(message.locator(".message-error")).to_have_attribute("data-error-kind", kind)
    expect(message.locator(".message-error")).to_contain_text(shown)
    expect(message.locator(".message-body")).to_have_text("일부 답변")
    expect(message.get_by_role("button", name="다시 시도")).to_be_visible()
