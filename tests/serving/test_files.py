"""The Files API with the official openai SDK on the in-process server: upload (streamed to disk), list,
retrieve, content, delete, the size limit, and organisations that cannot see each other's files."""

from __future__ import annotations

import io
from pathlib import Path

import openai
import pytest

from serving.security.auth import KeyStore
from tests.serving.inprocess import make_inprocess

BATCH_LINE = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


@pytest.fixture
def server(tiny_tokenizer, tmp_path: Path):
    """The in-process server with its data folder under ``tmp_path`` and a small upload limit."""
    server = make_inprocess(tiny_tokenizer, tmp_path, data_dir=tmp_path / "data", max_file_bytes=100_000)
    with server.http:
        yield server


def test_upload_list_retrieve_content_delete(server, tmp_path: Path) -> None:
    client = server.openai()
    created = client.files.create(file=("input.jsonl", io.BytesIO(BATCH_LINE * 3)), purpose="batch")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.bytes, created.filename, created.purpose, created.status) == (
        len(BATCH_LINE) * 3, "input.jsonl", "batch", "processed")
    stored = list((tmp_path / "data" / "files").rglob(created.id))
    assert len(stored) == 1 and stored[0].read_bytes() == BATCH_LINE * 3
    other = client.files.create(file=("notes.txt", b"\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4"), purpose="user_data")

    assert client.files.retrieve(created.id).model_dump() == created.model_dump()
    assert client.files.content(created.id).content == BATCH_LINE * 3
    assert [f.id for f in client.files.list()] == [other.id, created.id]  # newest first
    assert [f.id for f in client.files.list(order="asc")] == [created.id, other.id]
    assert [f.id for f in client.files.list(purpose="batch")] == [created.id]
    page = client.files.list(limit=1, order="asc")
    assert [f.id for f in page.data] == [created.id] and page.has_more
    assert [f.id for f in client.files.list(limit=1, order="asc", after=created.id).data] == [other.id]

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    assert not stored[0].exists()
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    assert not list((tmp_path / "data").rglob("*.part"))


def test_bad_purpose_and_missing_file(server) -> None:
    client = server.openai()
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("x.jsonl", b"{}"), purpose="nonsense")  # type: ignore[arg-type]
    assert err.value.body["param"] == "purpose"
    answer = server.http.post("/v1/files", data={"purpose": "batch"}, files={"other": ("x", b"1")})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "file"
    assert server.http.post("/v1/files", json={"purpose": "batch"}).status_code == 400


def test_a_malformed_multipart_body_is_a_400_and_leaves_nothing(server, tmp_path: Path) -> None:
    # Found by fuzzing (it was a 500): a part that ends right after the boundary line, without headers.
    boundary = "bdd09cf130b37e29a4faa70412841b0d"
    answer = server.http.post("/v1/files", content=f"--{boundary}\r\n--{boundary}--\r\n".encode(),
                              headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_multipart")
    assert "multipart/form-data" in error["message"]
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]


def test_upload_over_the_limit_is_413_and_leaves_nothing(server, tmp_path: Path) -> None:
    client = server.openai()
    with pytest.raises(openai.APIStatusError) as err:
        client.files.create(file=("big.jsonl", b"x" * 150_000), purpose="batch")
    assert err.value.status_code == 413

    def chunks():  # no Content-Length: the middleware counts the bytes as they stream
        for _ in range(30):
            yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n" + b"y" * 10_000

    headers = {"content-type": "multipart/form-data; boundary=b"}
    answer = server.http.post("/v1/files", content=chunks(), headers=headers)
    assert answer.status_code == 413
    assert client.files.list().data == []
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]


def test_another_organisation_gets_404(server) -> None:
    keys = KeyStore(server.database_url)
    mine, theirs = server.openai(keys.create("agency-a")), server.openai(keys.create("agency-b"))
    created = mine.files.create(file=("a.jsonl", BATCH_LINE), purpose="batch")
    for call in (lambda: theirs.files.retrieve(created.id), lambda: theirs.files.content(created.id),
                 lambda: theirs.files.delete(created.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert theirs.files.list().data == []
    assert [f.id for f in mine.files.list()] == [created.id]
    with pytest.raises(openai.AuthenticationError):
        server.openai("nxk-wrong").files.list()


def test_uploads_stream_past_the_json_body_limit(tiny_tokenizer, tmp_path: Path) -> None:
    """The security layer does not buffer an upload (as it does JSON bodies, up to ``max_request_bytes``): it
    lets it through as it arrives, counting against ``max_file_bytes`` only."""
    server = make_inprocess(tiny_tokenizer, tmp_path, data_dir=tmp_path / "data", max_request_bytes=1_000)
    with server.http:
        client = server.openai()
        data = BATCH_LINE * 2_000  # ~160 KB
        created = client.files.create(file=("big.jsonl", data), purpose="batch")
        assert created.bytes == len(data) and client.files.content(created.id).content == data
        with pytest.raises(openai.APIStatusError) as err:  # a JSON body is still held to the small limit
            client.chat.completions.create(model="tiny-ko", messages=[{"role": "user", "content": "가" * 2_000}])
        assert err.value.status_code == 413
