"""Several real server processes sharing one database (SQLite file or a real PostgreSQL server):
credits and rate limits stay exact, and a kill -9 loses no audit row of an answered request."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from serving.audit import AuditStore
from serving.auth import KeyStore
from tests.serving.conftest_pg import pg_db_url, postgres_url  # noqa: F401  (fixtures)
from tests.serving.test_security_quota import check_concurrent_accounting

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_fake_servers(url: str, count: int) -> tuple[list[subprocess.Popen], list[str]]:
    """``count`` uvicorn processes serving the stand-in app on loopback; returns them and their URLs."""
    env = {**os.environ, "NEXUS_K_DATABASE_URL": url, "PYTHONPATH": str(REPO)}
    procs, bases = [], []
    for _ in range(count):
        port = _free_port()
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "tests.serving.test_security_middleware:fake_app_from_env",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                    "--timeout-keep-alive",
                    "120",
                ],
                cwd=REPO,
                env=env,
            )
        )
        bases.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 240  # generous: CI machines are slow to import FastAPI when busy
    for base in bases:
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                for proc in procs:
                    proc.kill()
                raise RuntimeError("stand-in servers did not start")
            time.sleep(0.2)
    return procs, bases


def stop_servers(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each server still running and wait for it."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)


async def _fire(bases: list[str], key: str, total: int, concurrency: int, **body) -> list[httpx.Response]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:

        async def one(i: int) -> httpx.Response:
            async with limit:
                return await client.post(
                    bases[i % len(bases)] + "/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": "안녕"}], **body},
                )

        return await asyncio.gather(*(one(i) for i in range(total)))


@pytest.mark.slow
@pytest.mark.postgres
def test_server_processes_share_exact_credits_rates_and_audit(request: pytest.FixtureRequest) -> None:
    """Two server processes on one PostgreSQL database: the credits, the rate limit and the audit log
    add up exactly; then a kill -9 of one loses no audit row of a request it answered."""
    url = request.getfixturevalue("pg_db_url")
    KeyStore(url)  # create the tables before the processes race to
    procs, bases = start_fake_servers(url, 2)
    try:
        check_shared_limits(url, bases)
        check_kill_9(url, procs[0], bases[0])
    finally:
        stop_servers(procs)


@pytest.mark.slow
def test_kill_9_loses_no_answered_request_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'security.db'}"
    KeyStore(url)
    procs, bases = start_fake_servers(url, 1)
    try:
        check_kill_9(url, procs[0], bases[0])
    finally:
        stop_servers(procs)


def check_shared_limits(url: str, bases: list[str]) -> None:
    """Credits and a rate limit hammered through every server in ``bases`` at once stay exact."""
    store = KeyStore(url)
    credit_key = store.create("credits", token_quota=300)
    responses = asyncio.run(_fire(bases, credit_key, 60, 16, max_tokens=6, delay=0.05))
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}
    assert all(r.json()["error"]["type"] == "insufficient_quota" for r in responses if r.status_code == 429)
    served = statuses[200]
    credits = next(k for k in store.list() if k.org == "credits")
    assert credits.tokens_used == 10 * served  # 4 prompt + 6 completion tokens each
    assert credits.tokens_remaining == 300 - 10 * served >= 0
    assert served >= (300 - 16 * 80) // 10
    rows = [r for r in AuditStore(url).recent(1000) if r.org_name == "credits"]
    assert len(rows) == 60
    assert sum(r.prompt_tokens + r.completion_tokens for r in rows) == credits.tokens_used

    for attempt in range(3):  # the exact count holds within one clock minute; retry if a burst straddles two
        if time.time() % 60 > 40:
            time.sleep(61 - time.time() % 60)
        minute = int(time.time() // 60)
        rate_key = store.create(f"rate-{attempt}", rpm=10)
        responses = asyncio.run(_fire(bases, rate_key, 24, 12))
        if int(time.time() // 60) == minute:
            break
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 10, 429: 14}
    assert all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in responses if r.status_code == 429)
    assert all(int(r.headers["retry-after"]) >= 1 for r in responses if r.status_code == 429)


def check_kill_9(url: str, proc: subprocess.Popen, base: str) -> None:
    """Answer a dozen requests (half streamed), kill -9 the server, find a dozen audit rows."""
    key = KeyStore(url).create("kill")
    answered = 0
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
        for i in range(12):
            r = client.post(base + "/v1/chat/completions", json={"messages": [], "stream": i % 2 == 0})
            answered += r.status_code == 200
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert answered == 12
    assert len([r for r in AuditStore(url).recent(100) if r.org_name == "kill"]) == 12


@pytest.mark.postgres
def test_concurrent_processes_postgres(request: pytest.FixtureRequest) -> None:
    check_concurrent_accounting(request.getfixturevalue("pg_db_url"))
