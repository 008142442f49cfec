"""Vector stores on PostgreSQL (the replicas' database): the same code as on SQLite, against a real server."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.security.auth import KeyStore
from tests.serving.conftest_pg import pg_db_url, postgres_url  # noqa: F401  (fixtures)
from tests.serving.inprocess import InProcessServer, scripted_app
from tests.serving.scripted_engine import CharacterEmbedder, ScriptedEngine
from tests.serving.test_ingest import make_hwpx
from tests.serving.test_vector_stores import LEAVE, SECURITY, TRAVEL, add, upload, wait_store


@pytest.mark.postgres
def test_ingest_search_and_isolation_on_postgresql(request: pytest.FixtureRequest, tiny_tokenizer,
                                                   tmp_path: Path) -> None:
    url = request.getfixturevalue("pg_db_url")
    engine = ScriptedEngine(tiny_tokenizer)
    app = scripted_app(tiny_tokenizer, url, engine, CharacterEmbedder(tiny_tokenizer), data_dir=tmp_path / "data")
    server = InProcessServer(app, engine, TestClient(app), url)
    with server.http:
        keys = KeyStore(url)
        mine, theirs = server.openai(keys.create("agency-a")), server.openai(keys.create("agency-b"))
        leave, travel = upload(mine, "휴가.md", LEAVE), upload(mine, "출장.md", TRAVEL)
        store = mine.vector_stores.create(name="규정", file_ids=[leave, travel])
        assert wait_store(mine, store.id).file_counts.completed == 2
        done = add(mine, store.id, upload(mine, "보안.hwpx", make_hwpx(SECURITY)), attributes={"year": 2024})
        assert done.status == "completed" and done.attributes == {"year": 2024}
        assert mine.vector_stores.search(store.id, query="병가는 며칠").data[0].file_id == leave
        hits = mine.vector_stores.search(store.id, query="문서 보관", filters={"key": "year", "type": "gte",
                                                                           "value": 2024})
        assert [h.filename for h in hits.data] == ["보안.hwpx"]
        with pytest.raises(Exception) as err:
            theirs.vector_stores.search(store.id, query="병가")
        assert getattr(err.value, "status_code", None) == 404
        assert theirs.vector_stores.list().data == []
        assert mine.vector_stores.delete(store.id).deleted
