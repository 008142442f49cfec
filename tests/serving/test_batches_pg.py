"""Line claims on PostgreSQL (``FOR UPDATE SKIP LOCKED``) and SQLite, and two server processes on one
PostgreSQL database sharing a batch: both runners run its lines and the output holds every line exactly once."""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from pathlib import Path

import openai
import pytest
from sqlalchemy import func, select

from serving.launcher import launch
from serving.security.auth import KeyStore
from serving.storage.batches import BatchLine, batch_store
from tests.serving.conftest_pg import pg_db_url, postgres_url  # noqa: F401  (fixtures)
from tests.support import free_port, wait_healthy

REPO = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
LINES = 40


@pytest.mark.slow
@pytest.mark.postgres
def test_two_replicas_share_one_batch(request: pytest.FixtureRequest, tiny_model_dir: Path, tmp_path: Path) -> None:
    url = request.getfixturevalue("pg_db_url")
    KeyStore(url)
    batch_store(url)  # the tables exist before the processes race to create them
    env = {"NEXUS_K_DATABASE_URL": url, "NEXUS_K_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO),
           "NEXUS_K_TEST_TOKENIZER": str(tiny_model_dir), "NEXUS_K_TEST_TOKEN_DELAY": "0.02",
           "NEXUS_K_BATCH_CONCURRENCY": "2"}
    servers = []
    try:
        for _ in range(2):
            port = free_port()
            command = [sys.executable, "-m", "uvicorn", "--factory", "tests.serving.inprocess:scripted_app_from_env",
                       "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
            servers.append(launch(command, Path(tempfile.mkdtemp()) / "server.log", port, env, cwd=REPO))
        for server in servers:
            wait_healthy(server.base_url, 240, lambda s=server: s.process.poll() is None, server.log, poll=0.2)
        first, second = (openai.OpenAI(base_url=s.api, api_key="unused", max_retries=0, timeout=60) for s in servers)
        items = [{"custom_id": f"l{i}", "method": "POST", "url": CHAT,
                  "body": {"model": "tiny-ko", "messages": [{"role": "user", "content": f"분류 {i}"}]}}
                 for i in range(LINES)]
        data = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items).encode()
        file_id = first.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id
        batch = first.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
        deadline = time.monotonic() + 300
        while (done := second.batches.retrieve(batch.id)).status != "completed":
            assert done.status in ("validating", "in_progress", "finalizing"), done
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert (done.request_counts.completed, done.request_counts.failed) == (LINES, 0)
        output = [json.loads(x) for x in second.files.content(done.output_file_id).content.decode().splitlines()]
        assert [o["custom_id"] for o in output] == [f"l{i}" for i in range(LINES)]
        with batch_store(url).sessions() as s:
            runners = dict(s.execute(select(BatchLine.claimed_by, func.count()).where(BatchLine.batch_id == batch.id)
                                     .group_by(BatchLine.claimed_by)).all())
        assert len(runners) == 2, runners  # both processes ran lines of the one batch
    finally:
        for server in servers:
            server.stop(timeout=30)


def claims_are_bounded_and_disjoint(url: str) -> None:
    """Two runners claiming two lines each get lines 1-2 and 3-4; a stale claim is taken over."""
    store = batch_store(url)
    batch = store.create(None, CHAT, "file-x", None)
    store.add_lines(batch.id, [(i, f"c{i}", {"n": i}) for i in range(1, 6)])
    store.start(batch.id, "nobody", 5)
    assert [line.line_no for line in store.claim_lines("r1", 2, 60)] == [1, 2]
    assert [line.line_no for line in store.claim_lines("r2", 2, 60)] == [3, 4]
    time.sleep(0.05)
    assert [line.line_no for line in store.claim_lines("r3", 5, 0.01)] == [1, 2, 3, 4, 5]  # r1, r2 went silent
    time.sleep(0.05)
    first = min(line.id for line in store.claim_lines("r4", 5, 0.01))
    assert not store.finish_line(first, "r1", True, {}, None)  # r1 lost it: its late answer is not recorded
    assert store.finish_line(first, "r4", True, {}, None)


@pytest.mark.postgres
def test_line_claims_on_postgresql(request: pytest.FixtureRequest) -> None:
    claims_are_bounded_and_disjoint(request.getfixturevalue("pg_db_url"))


def test_line_claims_on_sqlite(tmp_path: Path) -> None:
    claims_are_bounded_and_disjoint(f"sqlite:///{tmp_path / 'claims.db'}")
