"""Chat page benchmark: how long the page takes to render a streamed answer in Debian's chromium.

The page re-renders the whole answer's Markdown once per animation frame while it streams, so the cost
that matters is one ``renderMarkdown`` call on an answer of a given length. Measured side by side with
the browser's plain ``textContent`` assignment of the same text (the floor for any renderer).

    python -m bench.web            # writes bench/results/web.json
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import logging
import platform
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WEB_DIR = REPO / "serving" / "web"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
logger = logging.getLogger("bench.web")

# A typical Korean answer block: heading, list, table, code, links (about 400 characters).
BLOCK = """### 처리 절차 안내
1. **접수**: 민원을 접수하면 *3일 이내*에 담당자를 배정합니다.
2. 검토 결과는 `전자문서`로 회신합니다.
   - 보완이 필요하면 다시 요청합니다.

| 항목 | 기한 |
|---|--:|
| 접수 | 1일 |
| 회신 | 7일 |

```python
def 안내(이름: str) -> str:
    return f"{이름}님, 접수되었습니다."
```
자세한 내용은 https://www.gov.kr 에서 확인하세요.

"""

MEASURE = """async ({ text, repeats }) => {
  const { renderMarkdown } = await import("/assets/markdown.js");
  const box = document.createElement("div");
  box.style.width = "760px";
  box.style.whiteSpace = "pre-wrap";
  document.body.append(box);
  // Each render is followed by a forced layout (offsetHeight): what a frame really pays.
  const time = (render) => {
    render();
    void box.offsetHeight;  // warm-up
    const start = performance.now();
    for (let i = 0; i < repeats; i++) {
      box.replaceChildren();
      void box.offsetHeight;
      render();
      void box.offsetHeight;
    }
    return (performance.now() - start) / repeats;
  };
  const markdown = time(() => box.replaceChildren(renderMarkdown(text)));
  const plain = time(() => { box.textContent = text; });
  box.remove();
  return { markdown, plain };
}"""


@dataclass
class BenchConfig:
    """What to measure."""

    sizes: list[int] = field(default_factory=lambda: [1_000, 4_000, 16_000, 64_000])
    """Answer lengths in characters (the text is BLOCK repeated and cut to length)."""
    repeats: int = 20
    """Renders per size; the mean is reported."""
    chromium: str = "/usr/bin/chromium"
    """Browser binary (Debian's chromium; nothing is downloaded)."""
    out: str = str(REPO / "bench" / "results" / "web.json")
    """Where the results go (the resolved config is saved in the same file)."""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files without a log line per request."""

    def log_message(self, format: str, *args: object) -> None:
        """Say nothing."""


def serve_static(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve the page's files on a free loopback port (ES modules do not load from file://)."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def run(config: BenchConfig) -> dict:
    """Measure every size and return the results with the config."""
    from playwright.sync_api import sync_playwright
    from rich.progress import track

    server, base_url = serve_static(WEB_DIR)
    rows = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=config.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page()
            # A blank page on the same origin: the renderer module alone, without the chat app.
            page.route("**/blank.html", lambda route: route.fulfill(
                body="<!doctype html><meta charset=utf-8><title>bench</title>", content_type="text/html"))
            page.goto(f"{base_url}/blank.html")
            version = browser.version
            for size in track(config.sizes, description="rendering"):
                text = (BLOCK * (size // len(BLOCK) + 1))[:size]
                result = page.evaluate(MEASURE, {"text": text, "repeats": config.repeats})
                rows.append({"chars": size, "markdown_ms": round(result["markdown"], 3),
                             "text_content_ms": round(result["plain"], 3),
                             "ratio": round(result["markdown"] / result["plain"], 1) if result["plain"] else None})
                logger.info("%d chars: %.2f ms markdown, %.3f ms textContent", size, result["markdown"],
                            result["plain"])
            browser.close()
    finally:
        server.shutdown()
    return {"config": asdict(config), "chromium": version, "machine": platform.machine(), "results": rows}


def main() -> None:
    """Command line: python -m bench.web [--repeats N] [--out PATH]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=BenchConfig.repeats)
    parser.add_argument("--out", default=BenchConfig.out)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = BenchConfig(repeats=args.repeats, out=args.out)
    report = run(config)
    Path(config.out).parent.mkdir(parents=True, exist_ok=True)
    Path(config.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    logger.info("wrote %s", config.out)


if __name__ == "__main__":
    main()
