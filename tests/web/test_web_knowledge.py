"""The knowledge-base panel against a real server: create a knowledge base, upload a Korean HWPX by dropping it
(with upload progress), follow it to 완료, see a broken file fail with its reason, ask with the knowledge base
chosen and open the numbered citation's passage; delete documents and knowledge bases; nothing is HTML."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.serving.test_ingest import make_hwpx
from tests.web.pages import (
    KB_FILE_TIMEOUT_MS,
    answer_text,
    choose_knowledge_base,
    create_knowledge_base,
    drop_files,
    fast_settings,
    kb_file_row,
    open_knowledge_panel,
    send,
    storage,
    wait_answer_finished,
    wait_for_models,
)

pytestmark = pytest.mark.browser

REGULATION = make_hwpx([
    "제1조(목적) 이 규정은 직원의 복무에 관한 사항을 정한다.",
    "제7조(병가) 직원은 질병이나 부상으로 직무를 수행할 수 없을 때 1년에 60일 이내의 병가를 받을 수 있다.",
    "제8조(연차휴가) 직원은 1년에 15일의 연차휴가를 쓸 수 있다.",
])
BROKEN = b"just text pretending to be a Hangul document"
# Greedy decoding and room for the scripted answer (the scripted engine ignores the temperature anyway).
SETTINGS = fast_settings(temperature=0, maxTokens=64)


def server_state(base_url: str) -> tuple[list[dict], list[dict]]:
    """The server's vector stores and uploaded documents."""
    stores = httpx.get(f"{base_url}/v1/vector_stores", timeout=30).json()["data"]
    files = httpx.get(f"{base_url}/v1/files", params={"purpose": "assistants"}, timeout=30).json()["data"]
    return stores, files


def record_progress(page: Page) -> None:
    """Keep every (value, max) the upload progress bars show, in window.__progress."""
    page.evaluate("""() => {
      window.__progress = [];
      new MutationObserver((changes) => {
        for (const change of changes) {
          const bar = change.target;
          if (bar.tagName === "PROGRESS") window.__progress.push([bar.value, bar.max]);
        }
      }).observe(document.getElementById("kb-uploads"),
                 { subtree: true, attributes: true, attributeFilter: ["value", "max"] });
    }""")


def confirm_delete(page: Page) -> None:
    dialog = page.locator("#delete-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="삭제", exact=True).click()
    expect(dialog).to_be_hidden()


def test_upload_cite_and_delete(open_page, rag_server):
    page = open_page(rag_server.base_url, storage=storage(settings=SETTINGS))
    wait_for_models(page)
    panel = open_knowledge_panel(page)
    expect(panel.locator("#kb-stores-empty")).to_be_visible()
    create_knowledge_base(page, "복무 규정집")
    [store] = server_state(rag_server.base_url)[0]
    assert store["name"] == "복무 규정집"

    # A Korean HWPX dropped on the drop zone: uploaded with progress, then processed to 완료.
    record_progress(page)
    drop_files(page, "#kb-drop", [("복무규정.hwpx", REGULATION, "application/hwp+zip")])
    row = kb_file_row(page, "복무규정.hwpx")
    expect(row.locator(".kb-status")).to_have_text("완료", timeout=KB_FILE_TIMEOUT_MS)
    progress = page.evaluate("window.__progress")
    assert progress and progress[-1][0] == progress[-1][1] > len(REGULATION)  # the multipart body, all sent
    expect(page.locator("#kb-uploads li")).to_have_count(0)

    # A broken file from the file picker: failed, with the server's reason on its row.
    with page.expect_file_chooser() as chooser:
        panel.get_by_role("button", name="파일 선택…").click()
    chooser.value.set_files(files=[{"name": "손상된 문서.hwpx", "mimeType": "application/octet-stream",
                                    "buffer": BROKEN}])
    broken = kb_file_row(page, "손상된 문서.hwpx")
    expect(broken.locator(".kb-status")).to_have_text("실패", timeout=KB_FILE_TIMEOUT_MS)
    expect(broken.locator(".kb-file-error")).to_contain_text("실패 이유: the file is named .hwpx but is not a HWPX")
    expect(panel.locator(".kb-store-open[aria-current='true'] .kb-store-counts")).to_have_text("문서 2개 · 실패 1개")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()

    # Ask with the knowledge base chosen: the file_search tool goes along, the answer cites [1].
    choose_knowledge_base(page, "복무 규정집")
    expect(page.locator("#kb-picker-label")).to_have_text("지식 베이스: 복무 규정집")
    with page.expect_request("**/v1/responses") as request:
        send(page, "병가는 며칠까지 받을 수 있나요?")
    body = request.value.post_data_json
    assert body["tools"] == [{"type": "file_search", "vector_store_ids": [store["id"]]}]
    assert body["include"] == ["file_search_call.results"]
    message = wait_answer_finished(page)
    expect(message).to_have_attribute("data-state", "done")
    assert answer_text(message).startswith("병가는 1년에 60일 이내입니다")
    citation = message.locator(".message-body button.citation")
    expect(citation).to_have_count(1)
    expect(citation).to_have_text("1")
    expect(citation).to_have_attribute("aria-label", "출처 1: 복무규정.hwpx 본문 보기")

    def opens_passage(button) -> None:
        dialog = page.locator("#citation-dialog")
        expect(dialog).to_be_visible()
        expect(dialog.locator("#citation-title")).to_have_text("출처 1")
        expect(dialog.locator("#citation-file")).to_have_text("복무규정.hwpx")
        expect(dialog.locator("#citation-passage")).to_contain_text("1년에 60일 이내의 병가를 받을 수 있다")
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(button).to_be_focused()  # back where the reader was

    citation.click()
    opens_passage(citation)
    source = message.locator(".sources .source-button")
    expect(source).to_have_text("1복무규정.hwpx")
    source.focus()
    page.keyboard.press("Enter")
    opens_passage(source)

    # The citations are kept with the conversation.
    page.reload()
    message = wait_answer_finished(page)
    expect(page.locator("#kb-picker-label")).to_have_text("지식 베이스: 복무 규정집")
    message.locator("button.citation").click()
    opens_passage(message.locator("button.citation"))

    # Delete the broken document, then the knowledge base: gone from the server, documents too.
    panel = open_knowledge_panel(page)
    broken.get_by_role("button", name="문서 삭제: 손상된 문서.hwpx").click()
    confirm_delete(page)
    expect(broken).to_have_count(0)
    stores, files = server_state(rag_server.base_url)
    assert [s["file_counts"]["total"] for s in stores] == [1]
    assert [f["filename"] for f in files] == ["복무규정.hwpx"]
    panel.get_by_role("button", name="지식 베이스 삭제").click()
    confirm_delete(page)
    expect(panel.locator("#kb-stores-empty")).to_be_visible()
    assert server_state(rag_server.base_url) == ([], [])
    page.keyboard.press("Escape")
    expect(page.locator("#kb-picker-label")).to_have_text("지식 베이스 사용 안 함")


XSS_NAME = '<img src=x onerror="window.__xss=1">'
XSS_TEXT = "병가 안내 <script>window.__xss=2</script> <img src=x onerror=window.__xss=3> 병가는 60일까지입니다."


def test_names_and_passages_are_text(open_page, rag_server):
    # bypass_csp: prove that the escaping alone keeps the payloads inert (as test_web_xss.py does).
    page = open_page(rag_server.base_url, storage=storage(settings=SETTINGS), bypass_csp=True)
    wait_for_models(page)
    open_knowledge_panel(page)
    create_knowledge_base(page, XSS_NAME)
    filename = "<b onmouseover=window.__xss=4>안내</b>.txt"
    drop_files(page, "#kb-drop", [(filename, XSS_TEXT.encode(), "text/plain")])
    expect(kb_file_row(page, filename).locator(".kb-status")).to_have_text("완료", timeout=KB_FILE_TIMEOUT_MS)
    page.keyboard.press("Escape")
    choose_knowledge_base(page, XSS_NAME)
    send(page, "병가 안내를 알려 주세요")
    message = wait_answer_finished(page)
    message.locator("button.citation").click()
    expect(page.locator("#citation-file")).to_have_text(filename)
    expect(page.locator("#citation-passage")).to_have_text(XSS_TEXT)
    page.wait_for_timeout(300)  # an onerror would fire right after the image failed to load
    assert page.evaluate("window.__xss") is None
    assert page.locator("img, script:not([src]), b, [onerror], [onmouseover]").count() == 0
    expect(page.locator("#kb-picker-label")).to_have_text(f"지식 베이스: {XSS_NAME}")
    page.keyboard.press("Escape")
    for store in server_state(rag_server.base_url)[0]:
        httpx.delete(f"{rag_server.base_url}/v1/vector_stores/{store['id']}", timeout=30)


def test_a_deleted_knowledge_base_is_explained_and_dropped(open_page, rag_server):
    store = httpx.post(f"{rag_server.base_url}/v1/vector_stores", json={"name": "사라질 자료"}, timeout=30).json()
    page = open_page(rag_server.base_url, storage=storage(settings=SETTINGS))
    wait_for_models(page)
    choose_knowledge_base(page, "사라질 자료")
    httpx.delete(f"{rag_server.base_url}/v1/vector_stores/{store['id']}", timeout=30)
    send(page, "병가는 며칠인가요?")
    message = wait_answer_finished(page)
    expect(message).to_have_attribute("data-state", "error")
    expect(message.locator(".message-error")).to_contain_text("선택한 지식 베이스를 서버에서 찾을 수 없습니다")
    expect(page.locator("#kb-picker-label")).to_have_text("지식 베이스 사용 안 함")  # the page let go of it


def test_panel_in_english(open_page, rag_server):
    page = open_page(rag_server.base_url, storage=storage(settings=fast_settings(lang="en")))
    expect(page.locator("#kb-picker-label")).to_have_text("No knowledge base")
    panel = open_knowledge_panel(page)
    expect(panel.locator("#kb-title")).to_have_text("Knowledge bases")
    expect(panel.get_by_label("New knowledge base name")).to_be_visible()
    expect(panel.get_by_role("button", name="Create", exact=True)).to_be_visible()


LIST_FILES = "**/v1/vector_stores/*/files?*"


def test_status_polling_backs_off_and_stops(open_page, rag_server):
    """The page's clock is Playwright's fake one, paused: time moves only when the test says, so the waits
    between status reads are measured exactly (in the page's time) and nothing depends on the machine's speed."""
    page = open_page(rag_server.base_url, storage=storage(settings=SETTINGS))
    wait_for_models(page)
    page.clock.install()
    page.clock.pause_at(page.evaluate("Date.now()") + 1000)
    page.evaluate("""() => {  // the page-clock time of every status read of a knowledge base's files
      window.__polls = [];
      const fetchBefore = window.fetch;
      window.fetch = (url, init) => {
        if (/vector_stores\\/[^/]+\\/files\\?/.test(String(url))) window.__polls.push(Date.now());
        return fetchBefore(url, init);
      };
    }""")
    open_knowledge_panel(page)
    create_knowledge_base(page, "느린 처리")

    def still_in_progress(route) -> None:  # the server's answer, with every document still being read
        response = route.fetch()
        body = response.json()
        for file in body["data"]:
            file["status"] = "in_progress"
        route.fulfill(response=response, json=body)

    page.route(LIST_FILES, still_in_progress)
    drop_files(page, "#kb-drop", [("복무규정.hwpx", REGULATION, "application/hwp+zip")])
    row = kb_file_row(page, "복무규정.hwpx")
    expect(row.locator(".kb-status")).to_have_text("처리 중")
    added_at = page.evaluate("Date.now()")
    for _ in range(600):  # one minute, a tenth of a second at a time
        page.clock.run_for(100)
    polls = page.evaluate("window.__polls")
    waits = [b - a for a, b in zip([added_at, *polls], polls, strict=False)]
    # 1 s, then 1.6 times longer each time, at most 15 s: 8 reads in the first minute instead of 60.
    expected = [1000, 1600, 2560, 4096, 6553, 10485, 15000, 15000]
    assert 5 <= len(waits) <= len(expected), waits
    assert all(wait >= least for wait, least in zip(waits, expected, strict=False)), waits

    page.unroute(LIST_FILES)  # now the server's real status: 완료, after which the page stops asking
    for _ in range(20):
        page.evaluate("document.querySelectorAll('#kb-files .kb-file').forEach((r) => { r.dataset.seen = '1'; })")
        with page.expect_response(LIST_FILES):
            page.clock.run_for(15_000)
        expect(page.locator("#kb-files .kb-file[data-seen]")).to_have_count(0)  # drawn again from that answer
        if row.get_attribute("data-status") == "completed":
            break
    expect(row.locator(".kb-status")).to_have_text("완료")
    reads = len(page.evaluate("window.__polls"))
    page.clock.run_for(600_000)
    assert len(page.evaluate("window.__polls")) == reads
