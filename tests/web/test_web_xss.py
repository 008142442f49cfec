"""Model and user text is always shown as text: script and onerror payloads stay inert; Markdown renders."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.web.pages import answer_text, send, storage, wait_answer_finished, wait_for_models

pytestmark = pytest.mark.browser

SCRIPT = "<script>window.__xss=1</script>"
IMG = '<img src=x onerror="window.__xss=1">'
REPLY = (
    f"위험한 입력 예시: {SCRIPT} 그리고 {IMG}\n\n"
    "[눌러 보세요](javascript:window.__xss=1) <svg onload=window.__xss=1>\n\n"
    f"```html\n{IMG}\n```\n"
)


def sse_body(text: str, model: str) -> str:
    """A Responses stream (typed events) that sends text in small pieces (payloads split across events)."""
    response = {"id": "resp_xss", "object": "response", "status": "in_progress", "model": model, "output": []}
    events = [("response.created", {"response": response})]
    for start in range(0, len(text), 7):
        events.append(("response.output_text.delta", {"item_id": "msg_xss", "output_index": 0,
                                                      "content_index": 0, "delta": text[start:start + 7]}))
    events.append(("response.completed", {"response": {**response, "status": "completed"}}))
    return "".join(
        f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': n, **fields}, ensure_ascii=False)}\n\n"
        for n, (kind, fields) in enumerate(events))


def assert_inert(page) -> None:
    assert page.evaluate("window.__xss") is None
    assert page.locator("#thread script, #thread img, #thread svg[onload], #thread [onerror]").count() == 0
    assert page.locator("#conversation-list script, #conversation-list img").count() == 0
    assert page.locator("a[href^='javascript']").count() == 0


def test_script_and_onerror_payloads_are_shown_as_text(open_page, web_server):
    # bypass_csp: the page's Content-Security-Policy would also stop inline scripts; switch it off here
    # so that this test proves the escaping alone keeps the payloads inert.
    page = open_page(web_server.base_url, storage=storage(), bypass_csp=True,
                     permissions=["clipboard-read", "clipboard-write"])
    wait_for_models(page)
    page.route("**/v1/responses", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=sse_body(REPLY, "tiny-ko")))

    send(page, f"이 글을 검토해 주세요: {SCRIPT} {IMG}")
    message = wait_answer_finished(page)
    expect(message).to_have_attribute("data-state", "done")
    page.wait_for_timeout(300)  # an onerror would fire right after the image failed to load
    assert_inert(page)

    user = page.locator("#thread article.user .message-body")
    expect(user).to_have_text(f"이 글을 검토해 주세요: {SCRIPT} {IMG}")
    shown = answer_text(message)
    assert SCRIPT in shown and IMG in shown
    assert "[눌러 보세요]" not in shown and "눌러 보세요" in shown  # the label stays, the link does not
    assert "<svg onload=window.__xss=1>" in shown
    expect(message.locator("pre code.language-html")).to_have_text(IMG)
    expect(page.locator(".conversation-title")).to_contain_text("<script>")

    message.locator(".copy-code").click()
    assert page.evaluate("navigator.clipboard.readText()") == IMG
    message.get_by_role("button", name="복사", exact=True).click()
    assert page.evaluate("navigator.clipboard.readText()") == REPLY

    page.reload()  # rendered again from localStorage: still text
    expect(page.locator("#thread article.user .message-body")).to_contain_text(SCRIPT)
    page.wait_for_timeout(300)
    assert_inert(page)


MARKDOWN = """### 처리 절차
1. **접수**: 민원 *접수* 후 ~~5일~~ 3일 이내
2. `전자문서`로 회신
   - 보완 요청 가능

> 참고: https://www.gov.kr 에서 확인

| 항목 | 기한 |
|:--|--:|
| 접수 | 1일 |

```python
print("안녕 <b>")
```
---
[정부24](https://www.gov.kr) [나쁜 링크](data:text/html,x)"""


def test_markdown_renders_structure_without_html(open_page, web_server):
    page = open_page(web_server.base_url, storage=storage())
    html = page.evaluate(
        """async (text) => {
          const { renderMarkdown } = await import("/assets/markdown.js");
          const box = document.createElement("div");
          box.append(renderMarkdown(text));
          return box.innerHTML;
        }""",
        MARKDOWN,
    )
    assert "<h5>처리 절차</h5>" in html
    assert "<ol><li><strong>접수</strong>: 민원 <em>접수</em> 후 <del>5일</del> 3일 이내</li>" in html
    assert "<code>전자문서</code>로 회신<ul><li>보완 요청 가능</li></ul>" in html
    assert '<blockquote><p>참고: <a href="https://www.gov.kr/"' in html
    assert '<th scope="col" style="text-align: left;">항목</th>' in html
    assert '<td style="text-align: right;">1일</td>' in html
    assert '<code class="language-python">print("안녕 &lt;b&gt;")</code>' in html
    assert "<hr>" in html
    assert '<a href="https://www.gov.kr/" target="_blank" rel="noopener noreferrer nofollow">정부24</a>' in html
    assert "data:text/html" not in html and "<span>나쁜 링크</span>" in html
