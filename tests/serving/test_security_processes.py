"""Several real server processes sharing one database (SQLite file or a real PostgreSQL server):
credits and rate limits stay exact, and a kill -9 loses no audit row of an answered request."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from serving.launcher import launch
from serving.security.audit import AuditStore
from serving.security.auth import KeyStore
from tests.serving.conftest_pg import pg_db_url, postgres_url  # noqa: F401  (fixtures)
from tests.serving.test_security_middleware import MESSAGES, prompt_tokens
from tests.serving.test_security_quota import check_concurrent_accounting
from tests.support import free_port, wait_healthy

REPO = Path(__file__).resolve().parents[2]


def start_fake_servers(url: str, count: int, tokenizer_dir: Path) -> tuple[list[subprocess.Popen], list[str]]:
    """``count`` uvicorn processes serving the real app on a scripted engine (50 ms a token) on loopback;
    returns them and their URLs."""
    env = {"NEXUS_K_DATABASE_URL": url, "PYTHONPATH": str(REPO), "NEXUS_K_TEST_TOKENIZER": str(tokenizer_dir),
           "NEXUS_K_TEST_TOKEN_DELAY": "0.05"}
    servers = []
    for _ in range(count):
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", "--factory",
                   "tests.serving.inprocess:scripted_app_from_env", "--host", "127.0.0.1",
                   "--port", str(port), "--log-level", "warning", "--timeout-keep-alive", "120"]
        servers.append(launch(command, Path(tempfile.mkdtemp()) / "server.log", port, env, cwd=REPO))
    try:
        for server in servers:  # generous: CI machines are slow to import FastAPI when busy
            wait_healthy(server.base_url, 240, lambda s=server: s.process.poll() is None, server.log, poll=0.2)
    except BaseException:
        for server in servers:
            server.stop(timeout=5)
        raise
    return [s.process for s in servers], [s.base_url for s in servers]


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
                    json={"model": "tiny-ko", "messages": MESSAGES, **body},
                )

        return await asyncio.gather(*(one(i) for i in range(total)))


@pytest.mark.slow
@pytest.mark.postgres
def test_server_processes_share_exact_credits_rates_and_audit(request: pytest.FixtureRequest, tiny_model_dir,
                                                               tiny_tokenizer) -> None:
    """Two server processes on one PostgreSQL database: the credits, the rate limit and the audit log
    add up exactly; then a kill -9 of one loses no audit row of a request it answered."""
    url = request.getfixturevalue("pg_db_url")
    KeyStore(url)  # create the tables before the processes race to
    procs, bases = start_fake_servers(url, 2, tiny_model_dir)
    try:
        check_shared_limits(url, bases, prompt_tokens(tiny_tokenizer) + 6)
        check_kill_9(url, procs[0], bases[0])
    finally:
        stop_servers(procs)


@pytest.mark.slow
def test_kill_9_loses_no_answered_request_sqlite(tmp_path: Path, tiny_model_dir) -> None:
    url = f"sqlite:///{tmp_path / 'security.db'}"
    KeyStore(url)
    procs, bases = start_fake_servers(url, 1, tiny_model_dir)
    try:
        check_kill_9(url, procs[0], bases[0])
    finally:
        stop_servers(procs)


def check_shared_limits(url: str, bases: list[str], cost: int) -> None:
    """Credits and a rate limit hammered through every server in ``bases`` at once stay exact (``cost``: the
    prompt plus 6 completion tokens, what each request reserves and uses)."""
    store = KeyStore(url)
    quota = 12 * cost + cost // 2
    credit_key = store.create("credits", token_quota=quota)
    responses = asyncio.run(_fire(bases, credit_key, 60, 16, max_tokens=6))
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}
    assert all(r.json()["error"]["type"] == "insufficient_quota" for r in responses if r.status_code == 429)
    served = statuses[200]
    credits = next(k for k in store.list() if k.org == "credits")
    assert credits.tokens_used == cost * served
    assert credits.tokens_remaining == quota - cost * served >= 0
    assert served == 12  # reservations are exact: every request that fits is served, none more
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
            r = client.post(base + "/v1/chat/completions",
                            json={"model": "tiny-ko", "messages": MESSAGES, "max_tokens": 4, "stream": i % 2 == 0})
            answered += r.status_code == 200
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert answered == 12
    assert len([r for r in AuditStore(url).recent(100) if r.org_name == "kill"]) == 12
    from serving.security.audit_chain import verify_chain
    from serving.storage.db import get_engine

    report = verify_chain(get_engine(url))  # every replica's rows, then a killed one: still one unbroken chain
    assert report.ok and report.rows >= 12, report.problem


@pytest.mark.postgres
def test_concurrent_processes_postgres(request: pytest.FixtureRequest) -> None:
    check_concurrent_accounting(request.getfixturevalue("pg_db_url"))
