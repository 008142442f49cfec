"""A batch survives ``kill -9``: a live ``nexus-k serve --engine hf`` on the tiny model is killed in the
middle of a 40-line batch and restarted on the same database and data folder; the batch completes and its
output holds every line exactly once."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import openai
import pytest

from tests.support import MODEL_NAME, start_server

pytestmark = pytest.mark.slow
CHAT = "/v1/chat/completions"
LINES = 40


def test_kill_9_mid_batch_then_restart_completes_every_line_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"  # the cache (database, data folder) lives beside it, kept across the restart
    args = ("--batch-concurrency", "2", "--batch-claim-timeout-s", "3")
    server = start_server("hf", tiny_model_dir, log, args=args)
    try:
        client = openai.OpenAI(base_url=server.api, api_key="unused", max_retries=0, timeout=120)
        items = [{"custom_id": f"line-{i}", "method": "POST", "url": CHAT,
                  "body": {"model": MODEL_NAME, "messages": [{"role": "user", "content": f"요약 {i}"}],
                           "max_tokens": 48, "ignore_eos": True}} for i in range(LINES)]
        data = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items).encode()
        file_id = client.files.create(file=("archive.jsonl", io.BytesIO(data)), purpose="batch").id
        batch = client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
        deadline = time.monotonic() + 300
        while client.batches.retrieve(batch.id).request_counts.completed < 4:
            assert time.monotonic() < deadline, "the batch made no progress"
            time.sleep(0.2)
    finally:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()

    server = start_server("hf", tiny_model_dir, tmp_path / "server.log", args=args)  # same cache folder
    try:
        client = openai.OpenAI(base_url=server.api, api_key="unused", max_retries=0, timeout=120)
        before = client.batches.retrieve(batch.id)
        assert before.status == "in_progress" and 4 <= before.request_counts.completed < LINES
        deadline = time.monotonic() + 600
        while (done := client.batches.retrieve(batch.id)).status != "completed":
            assert done.status in ("in_progress", "finalizing"), done
            assert time.monotonic() < deadline, "the batch did not finish after the restart"
            time.sleep(0.5)
        assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (
            LINES, LINES, 0)
        output = [json.loads(x) for x in client.files.content(done.output_file_id).content.decode().splitlines()]
        assert [o["custom_id"] for o in output] == [f"line-{i}" for i in range(LINES)]
        assert all(o["response"]["status_code"] == 200 for o in output)
    finally:
        server.stop()


def test_batch_on_vllm_with_priority_scheduling(tiny_model_dir: Path, tmp_path: Path) -> None:
    """vLLM started with ``--scheduling-policy priority`` takes the batch lines' lower priority."""
    from serving.engines import vllm_available
    from tests.support import VLLM_TEST_ARGS

    if not vllm_available():
        pytest.skip("vLLM is not installed")
    server = start_server("vllm", tiny_model_dir, tmp_path / "server.log",
                          args=(*VLLM_TEST_ARGS, "--scheduling-policy", "priority"))
    try:
        client = openai.OpenAI(base_url=server.api, api_key="unused", max_retries=0, timeout=300)
        items = [{"custom_id": f"v{i}", "method": "POST", "url": CHAT,
                  "body": {"model": MODEL_NAME, "messages": [{"role": "user", "content": f"질문 {i}"}],
                           "max_tokens": 8}} for i in range(6)]
        data = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items).encode()
        batch = client.batches.create(input_file_id=client.files.create(
            file=("in.jsonl", io.BytesIO(data)), purpose="batch").id, endpoint=CHAT, completion_window="24h")
        online = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "안녕"}],
                                                max_tokens=8)
        assert online.choices[0].message.content is not None
        deadline = time.monotonic() + 300
        while (done := client.batches.retrieve(batch.id)).status != "completed":
            assert done.status in ("validating", "in_progress", "finalizing"), done
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert (done.request_counts.completed, done.request_counts.failed) == (6, 0)
    finally:
        server.stop()
