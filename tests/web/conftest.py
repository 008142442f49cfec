"""Fixtures for the chat page tests: real Nexus-K servers (in-process uvicorn) and Debian's chromium.

Each server is ``serving.app.build_app(settings)`` on the tiny random-weight model with the transformers
engine, started by its own lifespan exactly as ``nexus-k serve --engine hf`` does, on a free port.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support import free_port, wait_healthy

CHROMIUM = Path("/usr/bin/chromium")
# The machines that run these tests are shared and often busy: wait longer than Playwright's defaults.
ACTION_TIMEOUT_MS = 60_000
expect.set_options(timeout=30_000)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MODEL_NAME = "tiny-ko"
ADAPTER_NAME = "민원-lora"


@dataclass
class WebServer:
    """A running server: its address, its database and the handle to stop it."""

    base_url: str
    database_url: str
    server: object
    thread: threading.Thread

    def metric(self, name: str) -> float:
        """One Prometheus sample's value from /metrics."""
        for line in httpx.get(f"{self.base_url}/metrics", timeout=10).text.splitlines():
            if line.startswith(f"{name} ") or line.startswith(f"{name}{{"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    def stop(self) -> None:
        """Shut the server down (its engine too) and wait until the port is closed."""
        self.server.should_exit = True
        self.thread.join(timeout=60)


def start_web_server(model_dir: Path | str, workdir: Path, lora: dict[str, str] | None = None,
                     timeout: float = 300, engine: Any = None, **extra: Any) -> WebServer:
    """Start a server in a thread and wait for GET /health == 200. ``engine``: one the caller owns (the
    scripted engine of tests/serving) instead of the transformers engine on ``model_dir``."""
    import uvicorn

    from serving.app import build_app
    from serving.config import ServerSettings

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    database_url = f"sqlite:///{workdir / 'nexus-k.db'}"
    settings = ServerSettings(model=str(model_dir), engine="hf", port=port, served_model_name=MODEL_NAME,
                              max_model_len=512, database_url=database_url, lora=lora or {}, **extra)
    config = uvicorn.Config(build_app(settings, engine), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"web-server-{port}", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url, timeout, thread.is_alive, poll=0.3)
    except BaseException:
        server.should_exit = True
        raise
    return WebServer(base_url, database_url, server, thread)


@pytest.fixture(scope="session")
def web_lora_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random LoRA adapter for the tiny model, so /v1/models lists an adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapter = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    out = tmp_path_factory.mktemp("web-lora")
    adapter.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def web_server(tiny_model_dir: Path, web_lora_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[WebServer]:
    """An open server (no API keys) serving the tiny model and one LoRA adapter."""
    server = start_web_server(tiny_model_dir, tmp_path_factory.mktemp("web-open"),
                              lora={ADAPTER_NAME: str(web_lora_dir)})
    yield server
    server.stop()


@dataclass
class SecuredServer:
    """A server whose database holds keys, so requests without a valid key get 401."""

    web: WebServer
    key: str
    """A key with no limits."""
    rate_limited_key: str
    """A key allowed one request per minute."""
    quota_key: str
    """A key with a token quota too small for any answer."""


@pytest.fixture(scope="session")
def secured_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredServer]:
    """A server that requires API keys, with one normal, one rate-limited and one out-of-quota key."""
    from serving.security.auth import KeyStore

    workdir = tmp_path_factory.mktemp("web-secured")
    store = KeyStore(f"sqlite:///{workdir / 'nexus-k.db'}")
    key, rate_limited, out_of_quota = (store.create("행정안전부"), store.create("한도기관", rpm=1),
                                       store.create("소진기관", token_quota=1))
    secured = SecuredServer(start_web_server(tiny_model_dir, workdir), key, rate_limited, out_of_quota)
    yield secured
    secured.web.stop()


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright (never a downloaded browser)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser) -> Iterator[Callable[..., Page]]:
    """Open the chat page of a server in a fresh browser context (so an empty localStorage).

    ``storage`` (key -> JSON value) is written to localStorage before the page's first script runs, on
    the first load only, so reload tests see what the page saved itself. JavaScript errors fail the test.
    """
    contexts = []
    errors: list[str] = []

    def _open(base_url: str, *, storage: dict | None = None, viewport: dict | None = None,
              bypass_csp: bool = False, permissions: list[str] | None = None) -> Page:
        context = browser.new_context(base_url=base_url, viewport=viewport or {"width": 1280, "height": 860},
                                      locale="ko-KR", bypass_csp=bypass_csp, permissions=permissions or [])
        contexts.append(context)
        if storage:
            seed = {key: json.dumps(value) for key, value in storage.items()}
            context.add_init_script(
                "if (!sessionStorage.getItem('seeded')) { sessionStorage.setItem('seeded', '1');"
                f" for (const [k, v] of Object.entries({json.dumps(seed)})) localStorage.setItem(k, v); }}"
            )
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.set_default_navigation_timeout(2 * ACTION_TIMEOUT_MS)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/")
        return page

    yield _open
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


# A chat template of our own that opens a thinking block, as reasoning models (EXAONE 4.0, HyperCLOVA X SEED
# Think) do; the server's deepseek_r1 reasoning parser takes the block out of the answer.
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}<|im_end|>\n"
    "{% endfor %}<|im_start|>assistant\n<think>"
)
THOUGHT = "민원인이 여권 재발급을 묻는다. 준비물부터 정리하자."
ANSWER = "여권 재발급에는 신분증과 사진 1매가 필요합니다."


@pytest.fixture(scope="session")
def thinking_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A server on the scripted engine of tests/serving (the tiny model's tokenizer with <think>/</think> and a
    thinking chat template) that always thinks THOUGHT, then answers ANSWER, read by ``deepseek_r1``."""
    from transformers import AutoTokenizer

    from serving.engines import vllm_available
    from tests.serving.scripted_engine import ScriptedEngine

    if not vllm_available():
        pytest.skip("the reasoning parsers are vLLM's, and vLLM is not importable here")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    tokenizer.chat_template = THINKING_TEMPLATE
    engine = ScriptedEngine(tokenizer, script=lambda *_: f"<think>{THOUGHT}</think>{ANSWER}", token_delay=0.02)
    server = start_web_server(engine.model_path, tmp_path_factory.mktemp("web-thinking"), engine=engine,
                              reasoning_parser="deepseek_r1")
    yield server
    server.stop()


def cite_sick_leave(prompt: str, settings: Any, lora: str | None) -> str:
    """The scripted model answers from the numbered source (``[n] (파일명)`` then its text) that mentions 병가,
    citing it as [n], as serving/handlers/file_search.py asks the model to."""
    number = None
    for line in prompt.splitlines():
        if line.startswith("[") and "]" in line and line[1:line.index("]")].isdigit():
            number = line[:line.index("]") + 1]
        elif number and "병가" in line:
            return f"병가는 1년에 60일 이내입니다 {number}."
    return "자료에서 찾지 못했습니다."


@pytest.fixture(scope="session")
def rag_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A server whose scripted model cites the knowledge-base passage about 병가 (BM25 search: no embedding model),
    with documents stored under its own data folder."""
    from transformers import AutoTokenizer

    from tests.serving.scripted_engine import ScriptedEngine

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    engine = ScriptedEngine(tokenizer, script=cite_sick_leave, max_model_len=4096)
    workdir = tmp_path_factory.mktemp("web-rag")
    server = start_web_server(engine.model_path, workdir, engine=engine, data_dir=workdir / "data")
    yield server
    server.stop()
