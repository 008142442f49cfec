"""The SIGTERM drain (``serving.drain``) on the stand-in server: 503 for new requests, the stream in
flight runs to its end, then the port closes. The live-model version is in ``test_hardening_live.py``."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from serving.drain import DrainingServer
from serving.security.audit import AuditStore
from serving.security.auth import KeyStore
from tests.serving.inprocess import scripted_app
from tests.serving.scripted_engine import ScriptedEngine
from tests.support import free_port


def test_draining_app_answers_503_and_audits_it(tmp_path: Path, tiny_tokenizer) -> None:
    url = f"sqlite:///{tmp_path / 'sec.db'}"
    app = scripted_app(tiny_tokenizer, url)
    key = KeyStore(url).create("행정안전부")
    client = TestClient(app)
    assert client.get("/health").status_code == 200
    app.state.drain.draining = True
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["error"]["code"] == "server_shutting_down"
    assert client.get("/v1/models").status_code == 401  # no key: still refused by the key check first
    models = client.get("/v1/models", headers={"Authorization": f"Bearer {key}", "X-Request-ID": "late"})
    assert models.status_code == 503 and models.headers["retry-after"] == "5"
    row = next(r for r in AuditStore(url).recent(5) if r.request_id == "late")
    assert (row.status, row.org_name) == (503, "행정안전부")


def _serve_in_thread(app, grace: int) -> tuple[DrainingServer, threading.Thread, str]:  # type: ignore[no-untyped-def]
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=grace)
    server = DrainingServer(config, app.state.drain)
    thread = threading.Thread(target=server.run, daemon=True)  # off the main thread: no signal handlers
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    return server, thread, base


@pytest.mark.parametrize("grace", [30, 1], ids=["drained", "grace_runs_out"])
def test_stream_in_flight_drains_then_port_closes(tmp_path: Path, grace: int, tiny_tokenizer) -> None:
    url = f"sqlite:///{tmp_path / 'sec.db'}"
    slow = ScriptedEngine(tiny_tokenizer, script=lambda *_: "가나다라마바사아자차카타파하" * 10, token_delay=0.05)
    server, thread, base = _serve_in_thread(scripted_app(tiny_tokenizer, url, slow), grace)
    body = {"model": "tiny-ko", "messages": [{"role": "user", "content": "안녕"}], "max_tokens": 60,
            "stream": True}  # a 3 s stream
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data:")
        server.handle_exit(signal.SIGTERM, None)  # what the signal handler does
        assert httpx.get(base + "/health", timeout=10).status_code == 503
        if grace == 1:
            with pytest.raises(httpx.RemoteProtocolError):
                list(lines)
        else:
            rest = [line for line in lines if line]
            # the whole stream arrived: its last chunk ends the 60-token reply, then [DONE]
            assert rest[-1] == "data: [DONE]" and '"finish_reason":"length"' in rest[-2]
    thread.join(timeout=30)
    assert not thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/health", timeout=2)
    streamed = next(r for r in AuditStore(url).recent(5) if r.path == "/v1/chat/completions")
    assert (streamed.status, streamed.error_type) == ((200, None) if grace == 30 else (503, "server_shutting_down"))
    if grace == 30:
        assert streamed.completion_tokens == 60
