"""The --cited mode of tests/web/make_screenshot.py: a real answer of the served model from a knowledge base.

Drives the page in Debian's chromium against a live server: creates a knowledge base, uploads a Korean document
(by default the regulation below, as HWPX), waits until the server has read it, chooses it for a new chat, asks
with greedy decoding and saves docs/img/webui-rag.png (the answer with its numbered citations) and
webui-rag-passage.png (the first citation's passage opened). Nothing is staged: the answer is what the model wrote.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.serving.test_ingest import make_hwpx
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.web.pages import API_KEY_KEY, SETTINGS_KEY

KB_NAME = "복무 규정"
DOCUMENT_NAME = "복무규정.hwpx"
QUESTION = "병가는 1년에 며칠까지 받을 수 있나요?"
# A sample regulation written for this screenshot (no outside text): articles with numbers, as offices write them.
REGULATION = [
    "복무 규정",
    "제1조(목적) 이 규정은 직원의 근무시간, 휴가 및 출장 등 복무에 관한 사항을 정함을 목적으로 한다.",
    "제2조(근무시간) 직원의 근무시간은 오전 9시부터 오후 6시까지로 하며, 점심시간은 낮 12시부터 오후 1시까지로 한다.",
    "제3조(유연근무) 직원은 부서장의 승인을 받아 출근 시각을 오전 7시부터 오전 10시 사이에서 정할 수 있다.",
    "제4조(휴가의 종류) 휴가는 연차휴가, 병가, 공가 및 특별휴가로 구분한다.",
    "제5조(연차휴가) 1년 이상 근무한 직원에게는 1년에 15일의 연차휴가를 준다. "
    "연차휴가는 반일 단위로 나누어 쓸 수 있다.",
    "제6조(병가) 직원이 질병이나 부상으로 직무를 수행할 수 없을 때에는 1년에 60일 이내의 병가를 받을 수 있다. "
    "병가가 7일을 넘으면 의사의 진단서를 제출하여야 한다.",
    "제7조(공가) 직원이 병역 소집, 투표, 건강검진에 응할 때에는 그에 필요한 기간을 공가로 받는다.",
    "제8조(특별휴가) 직원 본인이 결혼하는 경우 5일, 배우자가 출산한 경우 20일의 특별휴가를 받는다.",
    "제9조(출장) 출장은 부서장의 명령으로 하며, 출장을 마친 직원은 5일 이내에 출장 결과를 보고하여야 한다.",
]
SHOT_TIMEOUT_MS = 900_000
"""A laptop CPU reading, embedding and answering: minutes, not seconds."""


def take_cited(url: str, out_dir: Path, *, document: Path | None, question: str, model: str | None,
               api_key: str, keep: bool) -> list[Path]:
    """Upload the document into a new knowledge base, ask question and save the two screenshots."""
    from playwright.sync_api import expect, sync_playwright

    name, data = (document.name, document.read_bytes()) if document else (DOCUMENT_NAME, make_hwpx(REGULATION))
    seed = {SETTINGS_KEY: {"lang": "ko", "temperature": 0}}
    if api_key:
        seed[API_KEY_KEY] = api_key
    script = "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(json.dumps(v))});" for k, v in seed.items())
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = [out_dir / "webui-rag.png", out_dir / "webui-rag-passage.png"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="ko-KR", device_scale_factor=1)
        context.add_init_script(f"if (!sessionStorage.getItem('seeded')) {{ sessionStorage.setItem('seeded', '1'); "
                                f"{script} }}")
        context.set_default_timeout(SHOT_TIMEOUT_MS)
        expect.set_options(timeout=SHOT_TIMEOUT_MS)
        page = context.new_page()
        page.goto(url, timeout=300_000)
        page.locator("#model-select:not([disabled])").wait_for()
        if model:
            page.select_option("#model-select", model)

        page.locator("#kb-open").click()
        page.get_by_label("새 지식 베이스 이름").fill(KB_NAME)
        page.get_by_label("새 지식 베이스 이름").press("Enter")
        expect(page.locator("#kb-detail-name")).to_have_text(KB_NAME)
        page.locator("#kb-file-input").set_input_files(files=[{"name": name, "mimeType": "application/octet-stream",
                                                               "buffer": data}])
        row = page.locator("#kb-files .kb-file:is([data-status='completed'], [data-status='failed'])").filter(
            has=page.locator(".kb-file-name", has_text=name))
        row.wait_for()  # the page polls the document's status until the server has read it (or given up)
        if row.get_attribute("data-status") == "failed":
            sys.exit(f"the server could not read {name}: {row.locator('.kb-file-error').inner_text()}")
        page.keyboard.press("Escape")

        page.locator("#kb-picker-toggle").click()
        page.locator("#kb-picker-options").get_by_label(KB_NAME, exact=True).check()
        page.keyboard.press("Escape")
        page.locator("#composer-input").fill(question)
        page.locator("#composer-input").press("Enter")
        answer = page.locator("#thread > article.assistant").last
        expect(answer).not_to_have_attribute("data-state", "streaming", timeout=SHOT_TIMEOUT_MS)
        if answer.get_attribute("data-state") != "done":
            sys.exit(f"the answer ended {answer.get_attribute('data-state')}: {answer.inner_text()}")
        page.locator("#composer-input").blur()
        page.screenshot(path=str(shots[0]))
        citation = answer.locator("button.citation, .sources .source-button").first
        if citation.count():
            citation.click()
            expect(page.locator("#citation-dialog")).to_be_visible()
            page.screenshot(path=str(shots[1]))
            page.keyboard.press("Escape")
        else:
            print("the answer carries no citation: only webui-rag.png was taken", file=sys.stderr)
            shots = shots[:1]

        if not keep:  # through the panel, as a person would: the knowledge base and the uploaded document
            page.locator("#kb-open").click()
            stores = page.locator("#kb-store-list li")
            expect(stores.first).to_be_visible()
            before = stores.count()
            page.get_by_role("button", name="지식 베이스 삭제").click()
            page.locator("#delete-dialog").get_by_role("button", name="삭제", exact=True).click()
            expect(stores).to_have_count(before - 1)
        context.close()
        browser.close()
    return shots
