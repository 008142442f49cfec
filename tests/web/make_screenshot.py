"""Take the documentation screenshots of the chat page (docs/img/webui.png, webui-mobile.png), or (--cited) of a
real answer the served model gives from a knowledge base (docs/img/webui-rag.png, webui-rag-passage.png).

    nexus-k serve --engine hf --model <folder> --port 8000 &
    python -m tests.web.make_screenshot --url http://127.0.0.1:8000

The conversation shown is example content written into the browser's storage (the page renders stored
conversations exactly as streamed ones), so the picture does not depend on which model is served.

    make serve &                       # or any live `nexus-k serve` (add --api-key KEY when it wants one)
    python -m tests.web.make_screenshot --url http://127.0.0.1:8000 --cited

--cited drives the page as a person would (tests/web/make_screenshot_cited.py): creates a knowledge base, uploads
a Korean regulation (an HWPX built here, or --document FILE), waits until it is processed, chooses it for a new
chat, asks --question with greedy decoding and saves the answer as the served model wrote it, then the cited
passage opened; the knowledge base and its document are deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.web.pages import CONVERSATIONS_KEY, SETTINGS_KEY, conversation, fast_settings

OUT = Path(__file__).resolve().parents[2] / "docs" / "img"

ANSWER = """여권 재발급은 다음 순서로 진행됩니다.

1. **신청 장소**: 시·군·구청 여권민원실 또는 *정부24* 온라인
2. **준비물**: 신분증, 여권용 사진 1매, 기존 여권
3. **처리 기간**: 접수 후 약 `4~8일` (근무일 기준)

| 구분 | 수수료 |
|---|--:|
| 10년 복수여권 (58면) | 53,000원 |
| 10년 복수여권 (26면) | 50,000원 |

자세한 내용은 https://www.passport.go.kr 에서 확인하세요."""

CODE_ANSWER = """엑셀 대신 파이썬으로 집계하려면 다음처럼 할 수 있습니다.

```python
import pandas as pd

민원 = pd.read_csv("민원_2026.csv")
print(민원.groupby("부서")["처리일수"].mean())
```"""


def example_conversations() -> list[dict]:
    """Three stored conversations; the first one is shown."""
    first = conversation("demo-passport", "여권 재발급 절차 문의",
                         [("여권 재발급 절차와 준비물을 알려 주세요.", ANSWER)], 3_000)
    first["messages"][-1].update(model="nexus-k-demo", usage={"prompt": 38, "completion": 164})
    return [
        first,
        conversation("demo-python", "민원 처리일수 집계",
                     [("부서별 평균 처리일수를 구하고 싶어요.", CODE_ANSWER)], 2_000),
        conversation("demo-notice", "보도자료 초안 작성", [("보도자료 초안을 써 주세요.", "초안입니다.")], 1_000),
    ]


def take(url: str, out_dir: Path) -> list[Path]:
    """Open the page at url with the example conversations and save desktop and mobile screenshots."""
    from playwright.sync_api import sync_playwright

    seed = {CONVERSATIONS_KEY: example_conversations(), SETTINGS_KEY: fast_settings(),
            "nexus-k:current-conversation": "demo-passport"}
    script = "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(json.dumps(v))});" for k, v in seed.items())
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        for name, viewport in (("webui.png", {"width": 1280, "height": 800}),
                               ("webui-mobile.png", {"width": 390, "height": 844})):
            context = browser.new_context(viewport=viewport, locale="ko-KR", device_scale_factor=1)
            context.add_init_script(script)
            page = context.new_page()
            page.goto(url, timeout=300_000)
            page.locator("#model-select:not([disabled])").wait_for(timeout=120_000)
            page.locator("#composer-input").fill("수수료는 카드로 낼 수 있나요?")
            path = out_dir / name
            page.screenshot(path=str(path))
            shots.append(path)
            context.close()
        browser.close()
    return shots


if __name__ == "__main__":
    from tests.web.make_screenshot_cited import QUESTION, take_cited

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out-dir", type=Path, default=OUT)
    parser.add_argument("--cited", action="store_true", help="a real cited answer from a knowledge base")
    parser.add_argument("--document", type=Path, help="--cited: the document to upload (default: a built-in "
                        "Korean regulation as HWPX)")
    parser.add_argument("--question", default=QUESTION, help="--cited: what to ask")
    parser.add_argument("--model", help="--cited: the model or adapter to pick (default: the page's choice, the "
                        "first adapter)")
    parser.add_argument("--api-key", default="", help="--cited: a key, when the server wants one")
    parser.add_argument("--keep", action="store_true", help="--cited: keep the knowledge base and its document")
    args = parser.parse_args()
    if args.cited:
        shots = take_cited(args.url, args.out_dir, document=args.document, question=args.question,
                           model=args.model, api_key=args.api_key, keep=args.keep)
    else:
        shots = take(args.url, args.out_dir)
    for shot in shots:
        print(shot)
