"""The Batch API with the official openai SDK on the in-process server (the runner runs in the app's
lifespan, in the TestClient's event loop): every line once in the output, the error file, validation failures
naming their lines, cancel, credits running out line by line, and organisations that cannot see each other."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import select

from serving.security.auth import KeyStore
from serving.storage.db import AuditRecord
from tests.serving.inprocess import MODEL, make_inprocess
from tests.serving.scripted_engine import ScriptedEngine

CHAT = "/v1/chat/completions"


def chat_line(custom_id: str, text: str = "안녕하세요", **body: Any) -> dict[str, Any]:
    """One input line of a chat batch."""
    return {"custom_id": custom_id, "method": "POST", "url": CHAT,
            "body": {"model": MODEL, "messages": [{"role": "user", "content": text}], **body}}


def jsonl(items: list[Any]) -> bytes:
    return "".join((i if isinstance(i, str) else json.dumps(i, ensure_ascii=False)) + "\n" for i in items).encode()


def upload(client: openai.OpenAI, items: list[Any]) -> str:
    return client.files.create(file=("input.jsonl", io.BytesIO(jsonl(items))), purpose="batch").id


def wait_until(client: openai.OpenAI, batch_id: str, statuses: tuple[str, ...], timeout: float = 60) -> Any:
    """Poll ``batches.retrieve`` until the batch reaches one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.05)


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).content.decode().splitlines()]


@pytest.fixture
def server(tiny_tokenizer, tmp_path: Path):
    server = make_inprocess(tiny_tokenizer, tmp_path, data_dir=tmp_path / "data")
    with server.http:
        yield server


def test_batch_completes_with_every_line_once(server) -> None:
    client = server.openai()
    lines = [chat_line(f"req-{i}", f"질문 {i}", max_tokens=8) for i in range(10)]
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint=CHAT, completion_window="24h",
                                  metadata={"job": "민원 요약"})
    assert batch.id.startswith("batch_") and batch.status == "validating" and batch.metadata == {"job": "민원 요약"}
    done = wait_until(client, batch.id, ("completed", "failed"))
    assert done.status == "completed", done.errors
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (10, 10, 0)
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.error_file_id is None
    output = read_lines(client, done.output_file_id)
    assert [o["custom_id"] for o in output] == [f"req-{i}" for i in range(10)]
    assert len({o["id"] for o in output}) == 10 and all(o["id"].startswith("batch_req_") for o in output)
    for item in output:
        assert item["error"] is None and item["response"]["status_code"] == 200
        completion = openai.types.chat.ChatCompletion.model_validate(item["response"]["body"])
        assert completion.choices[0].message.content
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"
    assert [b.id for b in client.batches.list()] == [batch.id]
    with server.app.state.batch_runner.sessions() as s:  # one audit row per line, marked with the batch
        rows = list(s.scalars(select(AuditRecord).where(AuditRecord.path == CHAT)))
    assert len(rows) == 10 and all(batch.id in r.resources for r in rows)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_failed_requests_go_to_the_error_file(server) -> None:
    client = server.openai()
    lines = [chat_line("ok-1"), chat_line("too-many", n=1000), chat_line("ok-2"),
             chat_line("bad-field", temperature="hot")]
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint=CHAT, completion_window="24h")
    done = wait_until(client, batch.id, ("completed", "failed"))
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 2)
    assert [o["custom_id"] for o in read_lines(client, done.output_file_id)] == ["ok-1", "ok-2"]
    errors = read_lines(client, done.error_file_id)
    assert [e["custom_id"] for e in errors] == ["too-many", "bad-field"]
    assert all(e["response"]["status_code"] == 400 and e["error"]["message"] for e in errors)


def test_invalid_input_fails_naming_each_line_and_charges_nothing(server) -> None:
    key = KeyStore(server.database_url).create("metered", token_quota=10_000)
    client = server.openai(key)
    items: list[Any] = [
        chat_line("fine"),
        '{"custom_id": "broken", ',
        {**chat_line("wrong-url"), "url": "/v1/completions"},
        {**chat_line("wrong-method"), "method": "GET"},
        chat_line("fine"),
        chat_line("unknown-model", model="gpt-4o"),
    ]
    batch = client.batches.create(input_file_id=upload(client, items), endpoint=CHAT, completion_window="24h")
    failed = wait_until(client, batch.id, ("failed", "completed"))
    assert failed.status == "failed" and failed.failed_at and failed.output_file_id is None
    assert [(e.line, e.code) for e in failed.errors.data] == [
        (2, "invalid_json_line"), (3, "invalid_url"), (4, "invalid_method"), (5, "duplicate_custom_id"),
        (6, "model_not_found")]
    assert server.engine.calls == []
    assert KeyStore(server.database_url).list()[0].tokens_used == 0


def test_cancel_stops_new_lines_and_keeps_what_finished(tiny_tokenizer, tmp_path: Path) -> None:
    engine = ScriptedEngine(tiny_tokenizer, token_delay=0.02)
    server = make_inprocess(tiny_tokenizer, tmp_path, engine, data_dir=tmp_path / "data", batch_concurrency=2)
    with server.http:
        client = server.openai()
        file_id = upload(client, [chat_line(f"c-{i}") for i in range(30)])
        batch = client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
        deadline = time.monotonic() + 60
        while client.batches.retrieve(batch.id).request_counts.completed < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(openai.ConflictError):
            client.files.delete(file_id)  # the running batch reads it
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at
        done = wait_until(client, batch.id, ("cancelled",))
        assert done.cancelled_at and 2 <= done.request_counts.completed < 30
        output = read_lines(client, done.output_file_id)
        assert len(output) == done.request_counts.completed == len({o["custom_id"] for o in output})
        assert client.files.delete(file_id).deleted


def test_credits_running_out_fail_line_by_line(server) -> None:
    probe = server.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "안녕"}],
                                                    max_tokens=16)
    need = probe.usage.prompt_tokens + 16  # what one line reserves
    client = server.openai(KeyStore(server.database_url).create("small", token_quota=2 * need + need // 2))
    lines = [chat_line(f"q-{i}", "안녕", max_tokens=16) for i in range(6)]
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint=CHAT, completion_window="24h")
    done = wait_until(client, batch.id, ("completed", "failed"))
    assert done.status == "completed"
    assert done.request_counts.completed >= 1 and done.request_counts.failed >= 3
    assert done.request_counts.completed + done.request_counts.failed == 6
    errors = read_lines(client, done.error_file_id)
    assert {e["error"]["code"] for e in errors} == {"insufficient_quota"}
    assert {e["response"]["status_code"] for e in errors} == {429}


def test_another_organisation_sees_none_of_it(server) -> None:
    keys = KeyStore(server.database_url)
    mine, theirs = server.openai(keys.create("agency-a")), server.openai(keys.create("agency-b"))
    file_id = upload(mine, [chat_line("x")])
    with pytest.raises(openai.NotFoundError):
        theirs.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    batch = mine.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    done = wait_until(mine, batch.id, ("completed",))
    for call in (lambda: theirs.batches.retrieve(batch.id), lambda: theirs.batches.cancel(batch.id),
                 lambda: theirs.files.content(done.output_file_id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert theirs.batches.list().data == [] and theirs.files.list().data == []
    assert len(read_lines(mine, done.output_file_id)) == 1


def test_create_checks_its_arguments(server) -> None:
    client = server.openai()
    notes = client.files.create(file=("n.txt", b"x"), purpose="user_data").id
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=notes, endpoint=CHAT, completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=notes, endpoint="/v1/moderations", completion_window="24h")  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-missing", endpoint=CHAT, completion_window="24h")


def test_a_batch_past_its_window_expires_with_what_finished(tiny_tokenizer, tmp_path: Path) -> None:
    from sqlalchemy import update

    from serving.storage.batches import BatchRecord, batch_store

    engine = ScriptedEngine(tiny_tokenizer, token_delay=0.02)
    server = make_inprocess(tiny_tokenizer, tmp_path, engine, data_dir=tmp_path / "data", batch_concurrency=1,
                            batch_claim_timeout_s=0.4)
    with server.http:
        client = server.openai()
        batch = client.batches.create(input_file_id=upload(client, [chat_line(f"e-{i}") for i in range(20)]),
                                      endpoint=CHAT, completion_window="24h")
        deadline = time.monotonic() + 60
        while client.batches.retrieve(batch.id).request_counts.completed < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with batch_store(server.database_url).sessions.begin() as s:  # as if 24 hours had passed
            s.execute(update(BatchRecord).where(BatchRecord.id == batch.id).values(expires_at=int(time.time()) - 1))
        done = wait_until(client, batch.id, ("expired",))
        assert done.expired_at and 1 <= done.request_counts.completed < 20
        assert len(read_lines(client, done.output_file_id)) == done.request_counts.completed


def test_batch_lines_pass_the_organisations_pii_guard(server) -> None:
    client = server.openai(KeyStore(server.database_url).create("세무서", pii_guard="block"))
    lines = [chat_line("clean", "민원 처리 절차를 알려주세요"), chat_line("personal", "제 번호는 010-2345-6789 입니다")]
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint=CHAT, completion_window="24h")
    done = wait_until(client, batch.id, ("completed", "failed"))
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    [refused] = read_lines(client, done.error_file_id)
    assert refused["custom_id"] == "personal" and refused["error"]["code"] == "pii_detected"
    assert "010-2345-6789" not in json.dumps(refused, ensure_ascii=False)


def test_a_runner_that_died_finalizing_or_running_lines_is_taken_over(tiny_tokenizer, tmp_path: Path) -> None:
    from serving.storage.batches import batch_store

    database_url = f"sqlite:///{tmp_path / 'server.db'}"
    store = batch_store(database_url)
    finished, running = (store.create(None, CHAT, "file-gone", None) for _ in range(2))
    for batch in (finished, running):
        store.add_lines(batch.id, [(n, f"{batch.id}-{n}", chat_line("x")["body"]) for n in (1, 2, 3)])
        store.start(batch.id, "nobody", 3)
    for line in store.claim_lines("dead", 3, 60):  # the first batch's lines all answered, then the process died
        store.finish_line(line.id, "dead", True, {"status_code": 200, "request_id": "r", "body": {}}, None)
    store.to_finalize()
    assert store.claim_batch("dead", ("finalizing",), 60) is not None  # ... in the middle of writing the output
    assert len(store.claim_lines("dead", 2, 60)) == 2  # and two lines of the second batch were running there

    server = make_inprocess(tiny_tokenizer, tmp_path, data_dir=tmp_path / "data", batch_claim_timeout_s=0.5)
    with server.http:
        client = server.openai()
        first = wait_until(client, finished.id, ("completed",))
        second = wait_until(client, running.id, ("completed",))
        written = read_lines(client, first.output_file_id)
        assert [o["custom_id"] for o in written] == [f"{finished.id}-{n}" for n in (1, 2, 3)]
        output = read_lines(client, second.output_file_id)
        assert [o["custom_id"] for o in output] == [f"{running.id}-{n}" for n in (1, 2, 3)]
        assert all(o["response"]["status_code"] == 200 for o in output)


def test_an_input_file_gone_from_disk_fails_the_batch(server, tmp_path: Path) -> None:
    client = server.openai()
    file_id = upload(client, [chat_line("a")])
    for path in (tmp_path / "data").rglob(file_id):
        path.unlink()
    batch = client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    failed = wait_until(client, batch.id, ("failed",))
    assert [e.code for e in failed.errors.data] == ["input_file_unreadable"]


def test_batch_lines_ask_the_engine_for_a_lower_priority(server) -> None:
    client = server.openai()
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "안녕"}], max_tokens=4)
    batch = client.batches.create(input_file_id=upload(client, [chat_line("p", max_tokens=4)]), endpoint=CHAT,
                                  completion_window="24h")
    wait_until(client, batch.id, ("completed",))
    assert [call.settings.priority for call in server.engine.calls] == [0, 1]
