"""The real server (``nexus-k serve --engine hf`` on the tiny model) behind the security layer, driven
over 127.0.0.1 with the official ``openai`` client and raw HTTP: keys, credits, audit, hostile input,
client disconnects and a SIGTERM that drains the request in flight."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from serving.security.audit import AuditStore
from serving.security.auth import KeyStore
from tests.support import start_server

pytestmark = pytest.mark.slow
MAX_BODY = 100_000


@dataclass
class Live:
    base: str
    url: str  # the security database
    process: subprocess.Popen
    log: Path


def start_live_server(model_dir: Path, tmp: Path, timeout: float = 600) -> Live:
    """``nexus-k serve`` with a fresh security database, content auditing on and a small body limit."""
    url = f"sqlite:///{tmp / 'security.db'}"
    env = {"NEXUS_K_DATABASE_URL": url, "NEXUS_K_AUDIT_CONTENT": "1", "NEXUS_K_MAX_REQUEST_BYTES": str(MAX_BODY)}
    # The drain test must not lose its stream to the grace period on a loaded machine.
    server = start_server("hf", model_dir, tmp / "server.log", max_model_len=256,
                          args=["--timeout-graceful-shutdown", "300"], env=env, timeout=timeout)
    return Live(server.base_url, url, server.process, server.log)


@pytest.fixture(scope="module")
def live(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    server = start_live_server(tiny_model_dir, tmp_path_factory.mktemp("live"))
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def key(live: Live) -> str:
    """The first key: from now on the server is closed to anyone without one."""
    return KeyStore(live.url).create("행정안전부", rpm=1000)


def _unfinished(live: Live, key: str) -> float:
    text = httpx.get(live.base + "/metrics", headers={"Authorization": f"Bearer {key}"}).text
    line = next(ln for ln in text.splitlines() if ln.startswith("nexus_k_engine_unfinished_requests"))
    return float(line.split()[-1])


def test_open_until_a_key_exists_then_closed(live: Live, tiny_model_dir: Path) -> None:
    client = openai.OpenAI(base_url=live.base + "/v1", api_key="EMPTY")
    assert client.models.list().data[0].id == "tiny-ko"  # no keys yet: open, as on a laptop
    key = KeyStore(live.url).create("bootstrap")
    with pytest.raises(openai.AuthenticationError) as err:
        client.models.list()
    assert err.value.code == "invalid_api_key"
    assert openai.OpenAI(base_url=live.base + "/v1", api_key=key).models.list().data[0].id == "tiny-ko"
    assert httpx.get(live.base + "/health").status_code == 200
    assert httpx.get(live.base + "/metrics").status_code == 401
    page = httpx.get(live.base + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_chat_is_audited_with_usage_and_redacted_content(live: Live, key: str) -> None:
    client = openai.OpenAI(base_url=live.base + "/v1", api_key=key)
    reply = client.chat.completions.create(
        model="tiny-ko", messages=[{"role": "user", "content": "제 전화번호는 010-9876-5432 입니다"}], max_tokens=5
    )
    stream = client.chat.completions.create(
        model="tiny-ko",
        messages=[{"role": "user", "content": "안녕"}],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    streamed_usage = chunks[-1].usage
    rows = [r for r in AuditStore(live.url).recent(10) if r.path == "/v1/chat/completions" and r.status == 200]
    streamed, plain = rows[0], rows[1]
    assert (plain.org_name, plain.model) == ("행정안전부", "tiny-ko")
    assert (plain.prompt_tokens, plain.completion_tokens) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (
        streamed_usage.prompt_tokens,
        streamed_usage.completion_tokens,
    )
    assert "010-9876-5432" not in plain.prompt_text and "[PHONE]" in plain.prompt_text
    assert plain.latency_ms > 0


def test_credits_run_out_with_insufficient_quota(live: Live) -> None:
    store = KeyStore(live.url)
    # The server reserves exactly prompt + max_tokens, or prompt + what the 256-token context leaves when
    # max_tokens is unset: with 200 credits the first small request fits and an open-ended one cannot.
    key = store.create("작은기관", token_quota=200)
    client = openai.OpenAI(base_url=live.base + "/v1", api_key=key, max_retries=0)
    client.chat.completions.create(model="tiny-ko", messages=[{"role": "user", "content": "안녕"}], max_tokens=3)
    info = next(k for k in store.list() if k.org == "작은기관")
    assert 0 < info.tokens_used <= 3 + 64 and info.tokens_remaining == 200 - info.tokens_used
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="tiny-ko", messages=[{"role": "user", "content": "안녕"}])
    assert err.value.code == "insufficient_quota"


def _post(live: Live, key: str, body: bytes | dict, path: str = "/v1/chat/completions") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    return httpx.post(live.base + path, content=content, headers=headers, timeout=60)


MSG = [{"role": "user", "content": "안녕"}]
HOSTILE = {
    "nan_temperature": {"model": "tiny-ko", "messages": MSG, "temperature": math.nan},
    "inf_top_p": {"model": "tiny-ko", "messages": MSG, "top_p": math.inf},
    "negative_temperature": {"model": "tiny-ko", "messages": MSG, "temperature": -1},
    "top_p_above_one": {"model": "tiny-ko", "messages": MSG, "top_p": 1.5},
    "huge_n": {"model": "tiny-ko", "messages": MSG, "n": 10**9},
    "huge_max_tokens": {"model": "tiny-ko", "messages": MSG, "max_tokens": 10**12},
    "negative_max_tokens": {"model": "tiny-ko", "messages": MSG, "max_tokens": -5},
    "huge_seed": {"model": "tiny-ko", "messages": MSG, "seed": 2**80, "max_tokens": 1},
    "huge_logprobs": {"model": "tiny-ko", "messages": MSG, "logprobs": True, "top_logprobs": 10**6},
    "prompt_over_context": {"model": "tiny-ko", "messages": [{"role": "user", "content": "가나다 " * 400}]},
    "messages_not_a_list": {"model": "tiny-ko", "messages": "안녕"},
    "empty_messages": {"model": "tiny-ko", "messages": []},
    "unknown_role": {"model": "tiny-ko", "messages": [{"role": "hacker", "content": "x"}]},
    "unknown_model": {"model": "gpt-9", "messages": MSG},
    "completion_nan_penalty": ("/v1/completions", {"model": "tiny-ko", "prompt": "a", "presence_penalty": math.nan}),
    "completion_huge_n": ("/v1/completions", {"model": "tiny-ko", "prompt": "a", "n": 10**6}),
    "completion_prompt_ids_out_of_vocab": ("/v1/completions", {"model": "tiny-ko", "prompt": [10**9]}),
    # found by bench/fuzz.py (were 500s):
    "tokenize_empty_messages": ("/tokenize", {"messages": []}),
    "stop_token_ids_beyond_int64": {"model": "tiny-ko", "messages": MSG, "stop_token_ids": [10**30]},
    "stop_token_ids_out_of_vocab": {"model": "tiny-ko", "messages": MSG, "stop_token_ids": [10**8], "min_tokens": 3},
    "min_tokens_above_max_tokens": {"model": "tiny-ko", "messages": MSG, "min_tokens": 50, "max_tokens": 5},
    "completion_min_tokens_beyond_context": (
        "/v1/completions", {"model": "tiny-ko", "prompt": "a", "min_tokens": 10**12}
    ),
    "stop_token_ids_negative": {"model": "tiny-ko", "messages": MSG, "stop_token_ids": [-1], "min_tokens": 3},
    "completion_stop_token_ids_out_of_vocab": (
        "/v1/completions",
        {"model": "tiny-ko", "prompt": "a", "stop_token_ids": [10**8], "min_tokens": 3, "stream": True},
    ),
    "qaoa_overflowing_coefficients": (
        "/v1/quantum/qaoa",
        {"problem": {"num_variables": 3, "linear": [1.7e308, -1.7e308, 3e252]}, "formulation": "penalty"},
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_parameters_are_clean_4xx(live: Live, key: str, case: str) -> None:
    spec = HOSTILE[case]
    path, body = spec if isinstance(spec, tuple) else ("/v1/chat/completions", spec)
    response = _post(live, key, body, path)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text[:300])
    assert set(response.json()["error"]) >= {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"model": "tiny-ko", "messages": [{"role": "user", "content": "\xc3\x28"}]}', 400),
        (b'{"model": "tiny-ko", "messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", 400),
        (b'{"model": "tiny-ko", "messages": [{"role": "user", "content": "' + b"a" * (MAX_BODY + 1) + b'"}]}', 413),
        (b'{"model": "tiny-ko", "messages": [', 400),
        (b"", 400),
    ],
    ids=["invalid_utf8", "deep_json", "oversized", "truncated_json", "empty"],
)
def test_malformed_bodies_are_clean_4xx(live: Live, key: str, body: bytes, status: int) -> None:
    response = _post(live, key, body)
    assert response.status_code == status, response.text[:300]
    assert "error" in response.json()


def test_disconnect_mid_stream_leaks_no_engine_request(live: Live, key: str) -> None:
    body = {"model": "tiny-ko", "messages": MSG, "max_tokens": 200, "stream": True, "ignore_eos": True}
    for _ in range(3):
        with httpx.stream(
            "POST",
            live.base + "/v1/chat/completions",
            json=body,
            timeout=60,
            headers={"Authorization": f"Bearer {key}"},
        ) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data:")  # one chunk, then hang up
    deadline = time.monotonic() + 30
    while _unfinished(live, key) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _unfinished(live, key) == 0
    cut = [r for r in AuditStore(live.url).recent(20) if r.status == 499]
    assert len(cut) >= 1  # (a fast machine may finish a stream before it notices the hang-up)


def test_zz_sigterm_drains_the_request_in_flight(live: Live, key: str) -> None:
    """Last in this module: SIGTERM while a stream runs. New requests get 503 at once, the stream runs to
    [DONE] and is audited, then the port closes and the process ends by the re-raised SIGTERM."""
    body = {"model": "tiny-ko", "messages": MSG, "max_tokens": 200, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    auth = {"Authorization": f"Bearer {key}"}
    started = time.monotonic()
    with httpx.stream(
        "POST",
        live.base + "/v1/chat/completions",
        json=body,
        timeout=300,
        headers={**auth, "X-Request-ID": "sigterm-drain"},
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data:")
        live.process.send_signal(signal.SIGTERM)
        signalled_after = time.monotonic() - started
        health = httpx.get(live.base + "/health", timeout=60)
        models = httpx.get(live.base + "/v1/models", headers={**auth, "X-Request-ID": "during-drain"}, timeout=60)
        rest = [line for line in lines if line]
    for refused in (health, models):
        assert refused.status_code == 503, refused.text[:300]
        assert refused.json()["error"]["code"] == "server_shutting_down"
        assert refused.headers["connection"] == "close" and refused.headers["retry-after"]
    assert rest[-1] == "data: [DONE]"
    # A loaded machine may coalesce several tokens into one chunk, so count tokens by the usage chunk.
    assert any('"content"' in line for line in rest)
    assert json.loads(rest[-2].removeprefix("data: "))["usage"]["completion_tokens"] == 200
    assert live.process.wait(timeout=360) in (0, -signal.SIGTERM), live.log.read_text()[-2000:]
    with pytest.raises(httpx.ConnectError):
        httpx.get(live.base + "/health", timeout=2)
    rows = {r.request_id: r for r in AuditStore(live.url).recent(10)}
    drained = rows["sigterm-drain"]
    assert (drained.status, drained.completion_tokens) == (200, 200)
    assert drained.latency_ms / 1000 > signalled_after  # it was still generating when SIGTERM came
    assert (rows["during-drain"].status, rows["during-drain"].error_type) == (503, "server_error")
