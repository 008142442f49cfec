"""Vector stores with the official openai SDK on the in-process server: ingestion in the background (status
polled to completed or failed with ``last_error``), Korean hybrid search (CharacterEmbedder as the embedding
model), attribute filters, score threshold, file batches, BM25 alone without an embedding model, and
organisations that cannot see, search or cite each other's stores."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import openai
import pytest

from serving.security.auth import KeyStore
from tests.serving.inprocess import make_inprocess
from tests.serving.scripted_engine import CharacterEmbedder
from tests.serving.test_ingest import make_hwpx

LEAVE = ("# 휴가 규정\n제1조(연차휴가) 직원은 1년에 15일의 연차휴가를 사용할 수 있다.\n"
         "제2조(병가) 질병으로 출근할 수 없는 직원은 1년에 60일 이내의 병가를 받을 수 있다.\n")
TRAVEL = ("# 출장 규정\n제1조(출장비) 국내 출장의 숙박비는 하루 7만원을 넘을 수 없다.\n"
          "제2조(보고) 출장을 마치면 7일 안에 출장 결과 보고서를 제출한다.\n")
SECURITY = ["제1조(보관) 개인정보가 담긴 문서는 잠금 장치가 있는 캐비닛에 보관한다.",
            "제2조(파기) 보존 기간이 지난 개인정보 문서는 분쇄기로 파기한다."]
SMALL = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}


@pytest.fixture
def server(tiny_tokenizer, tmp_path: Path):
    """The in-process server with CharacterEmbedder as its embedding model."""
    server = make_inprocess(tiny_tokenizer, tmp_path, embedder=CharacterEmbedder(tiny_tokenizer),
                            data_dir=tmp_path / "data")
    with server.http:
        yield server


def upload(client: openai.OpenAI, name: str, data: bytes | str) -> str:
    return client.files.create(file=(name, data.encode() if isinstance(data, str) else data),
                               purpose="assistants").id


def add(client: openai.OpenAI, store_id: str, file_id: str, **kwargs):
    return client.vector_stores.files.create_and_poll(file_id, vector_store_id=store_id, poll_interval_ms=20,
                                                      **kwargs)


def wait_store(client: openai.OpenAI, store_id: str):
    import time

    for _ in range(500):
        store = client.vector_stores.retrieve(store_id)
        if store.status != "in_progress":
            return store
        time.sleep(0.02)
    raise AssertionError("the store's files never finished")


def test_create_ingest_search_and_manage(server) -> None:
    client = server.openai()
    leave, travel = upload(client, "휴가규정.md", LEAVE), upload(client, "출장규정.txt", TRAVEL)
    store = client.vector_stores.create(name="규정집", file_ids=[leave, travel], metadata={"owner": "인사과"},
                                        expires_after={"anchor": "last_active_at", "days": 7})
    assert store.object == "vector_store" and store.id.startswith("vs_") and store.file_counts.total == 2
    store = wait_store(client, store.id)
    assert (store.status, store.file_counts.completed, store.metadata) == ("completed", 2, {"owner": "인사과"})
    assert store.usage_bytes > 0 and store.expires_after.days == 7 and store.expires_at > store.created_at
    security = upload(client, "보안규정.hwpx", make_hwpx(SECURITY))
    done = add(client, store.id, security, attributes={"dept": "보안", "year": 2024})
    assert (done.status, done.last_error, done.attributes) == ("completed", None, {"dept": "보안", "year": 2024})
    assert done.chunking_strategy.type == "static" and done.chunking_strategy.static.max_chunk_size_tokens == 800

    page = client.vector_stores.search(store.id, query="병가는 며칠까지 받을 수 있나요?")
    first = page.data[0]
    assert (first.file_id, first.filename) == (leave, "휴가규정.md")
    assert "60일 이내의 병가" in first.content[0].text and first.content[0].type == "text"
    assert first.score == pytest.approx(1.0) and all(r.score <= first.score for r in page.data)
    top = client.vector_stores.search(store.id, query="개인정보 문서를 어디에 보관하나요", max_num_results=1)
    assert [r.filename for r in top.data] == ["보안규정.hwpx"] and top.data[0].attributes["dept"] == "보안"
    travel_hit = client.vector_stores.search(store.id, query="출장 숙박비 한도").data[0]
    assert travel_hit.file_id == travel

    assert [s.id for s in client.vector_stores.list()] == [store.id]
    renamed = client.vector_stores.update(store.id, name="인사 규정집", metadata={"v": "2"})
    assert (renamed.name, renamed.metadata) == ("인사 규정집", {"v": "2"})
    assert {f.id for f in client.vector_stores.files.list(store.id)} == {leave, travel, security}
    assert [f.id for f in client.vector_stores.files.list(store.id, filter="completed", limit=1).data] == [security]
    chunks = client.vector_stores.files.content(security, vector_store_id=store.id)
    assert "캐비닛" in "".join(c.text for c in chunks)
    updated = client.vector_stores.files.update(security, vector_store_id=store.id, attributes={"dept": "감사"})
    assert updated.attributes == {"dept": "감사"}
    assert client.vector_stores.files.delete(security, vector_store_id=store.id).deleted
    assert all(r.file_id != security for r in client.vector_stores.search(store.id, query="캐비닛 보관").data)
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.retrieve(security, vector_store_id=store.id)
    assert client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)
    assert client.files.retrieve(leave).id == leave  # the uploaded files stay


def test_small_chunks_find_the_right_article(server) -> None:
    client = server.openai()
    text = "# 복무 규정\n" + "\n".join(
        f"제{n}조({topic}) 직원의 {topic}에 관한 사항은 부서장이 {detail} 정한다." for n, (topic, detail) in
        enumerate([("출근", "매일 아침"), ("재택근무", "주 2회까지"), ("초과근무", "월 20시간 이내로"),
                   ("교육", "연 40시간 이상"), ("포상", "공적을 심사하여"), ("징계", "위원회 의결로")] * 3, start=1))
    store = client.vector_stores.create(name="복무", chunking_strategy=SMALL)
    done = add(client, store.id, upload(client, "복무규정.md", text))
    assert done.status == "completed" and done.chunking_strategy.static.max_chunk_size_tokens == 100
    chunks = [c.text for c in client.vector_stores.files.content(done.id, vector_store_id=store.id)]
    assert len(chunks) > 3 and all(c.startswith("# 복무 규정") for c in chunks)
    hit = client.vector_stores.search(store.id, query="재택근무는 몇 번까지 할 수 있나요", max_num_results=3).data[0]
    assert "재택근무" in hit.content[0].text


def test_filters_and_score_threshold(server) -> None:
    client = server.openai()
    store = client.vector_stores.create(name="규정")
    add(client, store.id, upload(client, "휴가.md", LEAVE), attributes={"dept": "인사", "year": 2024, "public": True})
    add(client, store.id, upload(client, "출장.md", TRAVEL), attributes={"dept": "총무", "year": 2022})
    query = "규정 직원 출장 휴가"

    def names(**kwargs) -> list[str]:
        return sorted(r.filename for r in client.vector_stores.search(store.id, query=query, **kwargs).data)

    assert names() == ["출장.md", "휴가.md"]
    assert names(filters={"key": "dept", "type": "eq", "value": "총무"}) == ["출장.md"]
    assert names(filters={"key": "dept", "type": "ne", "value": "총무"}) == ["휴가.md"]
    assert names(filters={"key": "year", "type": "gte", "value": 2023}) == ["휴가.md"]
    assert names(filters={"key": "year", "type": "lt", "value": 2023}) == ["출장.md"]
    assert names(filters={"key": "public", "type": "eq", "value": True}) == ["휴가.md"]
    assert names(filters={"type": "and", "filters": [{"key": "dept", "type": "eq", "value": "인사"},
                                                     {"key": "year", "type": "lte", "value": 2020}]}) == []
    assert names(filters={"type": "or", "filters": [{"key": "dept", "type": "eq", "value": "인사"},
                                                    {"key": "year", "type": "lte", "value": 2022}]}) == \
        ["출장.md", "휴가.md"]
    # Filters apply before ranking: the best chunk of the filtered set comes back with the top score.
    only = client.vector_stores.search(store.id, query="병가", filters={"key": "dept", "type": "eq", "value": "총무"})
    assert [r.filename for r in only.data] == ["출장.md"]
    everything = client.vector_stores.search(store.id, query="병가 60일")
    assert everything.data[0].filename == "휴가.md" and everything.data[0].score == pytest.approx(1.0)
    assert len(everything.data) == 2 and everything.data[1].score < 1.0
    strict = client.vector_stores.search(store.id, query="병가 60일", ranking_options={"score_threshold": 0.99})
    assert [r.filename for r in strict.data] == ["휴가.md"]
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.search(store.id, query="병가", max_num_results=51)
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.search(store.id, query="병가", filters={"key": "x", "type": "like", "value": 1})


def test_unreadable_files_fail_with_a_reason_and_the_server_goes_on(server) -> None:
    client = server.openai()
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", "application/hwp+zip")
        archive.writestr("Contents/section0.xml", b"<a>" + b" " * 100_000_000 + b"</a>")
    files = {"broken.pdf": b"%PDF-1.7\n1 0 obj <</Type /Catalog>> endobj\ntrailer <<>>\n%%EOF",
             "fake.hwpx": b"this is not a zip", "bomb.hwpx": bomb.getvalue(), "fake.docx": b"%PDF-1.4 named docx",
             "empty.txt": b"  "}
    store = client.vector_stores.create(name="broken")
    failures = {}
    for name, data in files.items():
        done = add(client, store.id, upload(client, name, data))
        assert done.status == "failed", name
        failures[name] = (done.last_error.code, done.last_error.message)
    assert failures["fake.hwpx"][0] == "unsupported_file" and "not a HWPX" in failures["fake.hwpx"][1]
    assert "zip bomb" in failures["bomb.hwpx"][1]
    assert "PDF" in failures["broken.pdf"][1] and failures["fake.docx"][0] == "unsupported_file"
    assert "no text" in failures["empty.txt"][1]
    counts = client.vector_stores.retrieve(store.id).file_counts
    assert (counts.failed, counts.completed, counts.in_progress) == (5, 0, 0)
    assert client.vector_stores.search(store.id, query="아무거나").data == []
    good = add(client, store.id, upload(client, "ok.md", LEAVE))
    assert good.status == "completed"


def test_file_batches(server) -> None:
    client = server.openai()
    store = client.vector_stores.create(name="batch")
    leave, travel = upload(client, "휴가.md", LEAVE), upload(client, "출장.md", TRAVEL)
    batch = client.vector_stores.file_batches.create_and_poll(
        store.id, files=[{"file_id": leave, "attributes": {"dept": "인사"}},
                         {"file_id": travel, "attributes": {"dept": "총무"}}], poll_interval_ms=20)
    assert batch.object == "vector_store.files_batch" and batch.status == "completed"
    assert (batch.file_counts.completed, batch.file_counts.total) == (2, 2)
    listed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    assert {(f.id, f.attributes["dept"]) for f in listed} == {(leave, "인사"), (travel, "총무")}
    again = client.vector_stores.file_batches.create_and_poll(store.id, file_ids=[leave], attributes={"v": 2},
                                                              poll_interval_ms=20)
    assert client.vector_stores.file_batches.retrieve(again.id, vector_store_id=store.id).file_counts.total == 1
    assert client.vector_stores.files.retrieve(leave, vector_store_id=store.id).attributes == {"v": 2}
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.file_batches.retrieve("vsfb_nope", vector_store_id=store.id)


def test_bm25_alone_without_an_embedding_model(tiny_tokenizer, tmp_path: Path) -> None:
    server = make_inprocess(tiny_tokenizer, tmp_path, data_dir=tmp_path / "data")
    with server.http:
        client = server.openai()
        store = client.vector_stores.create(name="bm25")
        add(client, store.id, upload(client, "휴가.md", LEAVE))
        add(client, store.id, upload(client, "출장.md", TRAVEL))
        answer = client.vector_stores.with_raw_response.search(store.id, query="출장비 숙박비")
        assert answer.headers["x-nexus-retrieval"] == "bm25"
        assert [r.filename for r in answer.parse().data] == ["출장.md"]  # no shared term: the other is left out


def test_another_organisation_gets_404_on_every_route(server) -> None:
    keys = KeyStore(server.database_url)
    mine, theirs = server.openai(keys.create("agency-a")), server.openai(keys.create("agency-b"))
    leave = upload(mine, "휴가.md", LEAVE)
    store = mine.vector_stores.create(name="a")
    add(mine, store.id, leave)
    batch = mine.vector_stores.file_batches.create(store.id, file_ids=[leave])
    their_file = upload(theirs, "출장.md", TRAVEL)
    calls = [
        lambda: theirs.vector_stores.retrieve(store.id),
        lambda: theirs.vector_stores.update(store.id, name="x"),
        lambda: theirs.vector_stores.delete(store.id),
        lambda: theirs.vector_stores.search(store.id, query="병가"),
        lambda: theirs.vector_stores.files.create(vector_store_id=store.id, file_id=their_file),
        lambda: theirs.vector_stores.files.list(store.id),
        lambda: theirs.vector_stores.files.retrieve(leave, vector_store_id=store.id),
        lambda: theirs.vector_stores.files.update(leave, vector_store_id=store.id, attributes={"a": "b"}),
        lambda: theirs.vector_stores.files.content(leave, vector_store_id=store.id),
        lambda: theirs.vector_stores.files.delete(leave, vector_store_id=store.id),
        lambda: theirs.vector_stores.file_batches.create(store.id, file_ids=[their_file]),
        lambda: theirs.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id),
        lambda: theirs.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id),
        lambda: theirs.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id),
        lambda: theirs.vector_stores.create(file_ids=[leave]),  # cannot put my file in their store
        lambda: mine.vector_stores.files.create(vector_store_id=store.id, file_id=their_file),
    ]
    for index, call in enumerate(calls):
        with pytest.raises(openai.NotFoundError):
            call()
            pytest.fail(f"call {index} did not answer 404")
    assert theirs.vector_stores.list().data == []
    assert [s.id for s in mine.vector_stores.list()] == [store.id]
    wait_store(mine, store.id)  # the batch re-added the file
    assert mine.vector_stores.search(store.id, query="병가").data[0].file_id == leave


# ------------------------------------------------------------------------------- file_search in /v1/responses


def citing(prompt: str, settings, lora) -> str:
    """The scripted model cites the source that mentions 병가 as [n] (its number in the prompt)."""
    for line in prompt.splitlines():
        if line.startswith("[") and "휴가" in line:
            return f"병가는 1년에 60일 이내입니다 {line.split(' ')[0]}."
    return "자료에 없습니다."


@pytest.fixture
def rag(tiny_tokenizer, tmp_path: Path):
    """A server whose model cites its sources, with a store holding the two regulations."""
    from tests.serving.scripted_engine import ScriptedEngine

    engine = ScriptedEngine(tiny_tokenizer, script=citing, max_model_len=4096)
    server = make_inprocess(tiny_tokenizer, tmp_path, engine=engine, embedder=CharacterEmbedder(tiny_tokenizer),
                            data_dir=tmp_path / "data")
    with server.http:
        keys = KeyStore(server.database_url)
        client = server.openai(keys.create("agency-a"))
        leave, travel = upload(client, "휴가규정.md", LEAVE), upload(client, "출장규정.md", TRAVEL)
        store = client.vector_stores.create(name="규정", file_ids=[leave, travel])
        wait_store(client, store.id)
        yield server, client, store.id, leave, server.openai(keys.create("agency-b"))


def test_file_search_cites_the_chunks_it_used(rag) -> None:
    server, client, store_id, leave, _ = rag
    question = "병가는 며칠까지 받을 수 있나요?"
    tool = {"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 2}
    response = client.responses.create(model="tiny-ko", input=question, tools=[tool],
                                       include=["file_search_call.results"])
    call, message = response.output
    assert (call.type, call.status, call.queries) == ("file_search_call", "completed", [question])
    assert call.results[0].file_id == leave and "60일 이내의 병가" in call.results[0].text
    assert call.results[0].filename == "휴가규정.md" and len(call.results) == 2
    text = message.content[0]
    assert text.text == "병가는 1년에 60일 이내입니다 [1]."
    [citation] = text.annotations
    assert (citation.type, citation.file_id, citation.filename, citation.index) == (
        "file_citation", leave, "휴가규정.md", text.text.index("[1]"))
    prompt = server.engine.tokenizer.decode(server.engine.calls[-1].prompt_ids)
    assert "[1] (휴가규정.md)" in prompt and "60일 이내의 병가" in prompt and "[2] (출장규정.md)" in prompt
    assert prompt.index("[1] (휴가규정.md)") < prompt.index(question)
    # Without the include, the call item carries no results; the stored conversation keeps the question only.
    plain = client.responses.create(model="tiny-ko", input=question, tools=[tool])
    assert plain.output[0].results is None
    items = client.responses.input_items.list(plain.id).data
    assert [i.content[0].text for i in items] == [question]
    # A follow-up turn replays the stored file_search_call item without trouble.
    follow = client.responses.create(model="tiny-ko", input="연차휴가는요?", previous_response_id=plain.id,
                                     tools=[tool])
    assert follow.output[0].type == "file_search_call" and follow.status == "completed"


def test_an_answer_without_markers_is_annotated_with_every_source_file(rag) -> None:
    server, client, store_id, _, _ = rag
    server.engine.script = lambda prompt, settings, lora: "잘 모르겠습니다."
    response = client.responses.create(model="tiny-ko", input="출장 숙박비는 얼마인가요?",
                                       tools=[{"type": "file_search", "vector_store_ids": [store_id]}])
    text = response.output[1].content[0]
    assert {a.filename for a in text.annotations} == {"휴가규정.md", "출장규정.md"}
    assert all(a.index == len(text.text) for a in text.annotations)


def test_streamed_file_search_events(rag) -> None:
    _, client, store_id, leave, _ = rag
    events = list(client.responses.create(model="tiny-ko", input="병가 일수", stream=True,
                                          tools=[{"type": "file_search", "vector_store_ids": [store_id]}]))
    kinds = [e.type for e in events]
    start = kinds.index("response.file_search_call.in_progress")
    assert kinds[start - 1:start + 4] == ["response.output_item.added", "response.file_search_call.in_progress",
                                          "response.file_search_call.searching", "response.file_search_call.completed",
                                          "response.output_item.done"]
    assert events[start - 1].item.type == "file_search_call" and events[start - 1].output_index == 0
    annotation = next(e for e in events if e.type == "response.output_text.annotation.added")
    assert annotation.output_index == 1 and annotation.annotation.file_id == leave
    done = events[-1].response
    assert done.output[0].type == "file_search_call" and done.output[1].content[0].annotations[0].file_id == leave


def test_another_organisation_cannot_search_or_cite_the_store(rag) -> None:
    server, _, store_id, _, theirs = rag
    calls = len(server.engine.calls)
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError):
            theirs.responses.create(model="tiny-ko", input="병가", stream=stream,
                                    tools=[{"type": "file_search", "vector_store_ids": [store_id]}])
    assert len(server.engine.calls) == calls  # the model never ran


def test_files_left_in_progress_are_ingested_when_the_server_starts(tiny_tokenizer, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from serving.storage.vector_stores import vector_store_store

    server = make_inprocess(tiny_tokenizer, tmp_path, embedder=CharacterEmbedder(tiny_tokenizer),
                            data_dir=tmp_path / "data")
    with server.http:
        client = server.openai()
        leave = upload(client, "휴가.md", LEAVE)
        store_id = client.vector_stores.create(name="재시작").id
    # As if a server had recorded the file and stopped before ingesting it.
    stores = vector_store_store(server.database_url)
    chunking = {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}
    stores.add_files(stores.get(store_id, None), [(leave, "휴가.md", {"k": "v"}, chunking)])
    assert stores.get_file(store_id, leave).status == "in_progress"
    server.http = TestClient(server.app)
    with server.http:
        store = wait_store(server.openai(), store_id)
        assert store.file_counts.completed == 1
        assert server.openai().vector_stores.search(store_id, query="병가").data[0].attributes == {"k": "v"}


def test_file_search_over_two_stores(rag) -> None:
    _, client, store_id, leave, _ = rag
    other = client.vector_stores.create(name="보안")
    security = add(client, other.id, upload(client, "보안.hwpx", make_hwpx(SECURITY))).id
    response = client.responses.create(
        model="tiny-ko", input="개인정보 문서 보관과 병가", include=["file_search_call.results"],
        tools=[{"type": "file_search", "vector_store_ids": [store_id, other.id], "max_num_results": 3}])
    found = {r.file_id for r in response.output[0].results}
    assert {leave, security} <= found
