"""Reranking after fusion with a served cross-encoder (the real transformers scoring engine on the tiny Llama with a
1-label head, in-process): vector store search and the Responses ``file_search`` tool return the cross-encoder's
scores, best first, ``score_threshold`` cuts the final score, and ``ranker: "none"`` keeps the fused ranking."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.security.auth import KeyStore
from tests.serving.inprocess import make_inprocess
from tests.serving.scripted_engine import CharacterEmbedder, ScriptedEngine
from tests.serving.test_rerank_cross_encoder import DOCUMENTS, QUERY, reference_scores, reranker, reranker_dir  # noqa: F401
from tests.serving.test_vector_stores import upload, wait_store


@pytest.fixture
def rag(tiny_tokenizer, reranker, tmp_path: Path):  # noqa: F811
    """A server with an embedding model and the cross-encoder; a store of the four short documents, one a file."""
    engine = ScriptedEngine(tiny_tokenizer, script=lambda *_: "답입니다.", max_model_len=4096)
    server = make_inprocess(tiny_tokenizer, tmp_path, engine=engine, embedder=CharacterEmbedder(tiny_tokenizer),
                            reranker=reranker, data_dir=tmp_path / "data")
    with server.http:
        keys = KeyStore(server.database_url)
        client = server.openai(keys.create("agency-a"))
        ids = [upload(client, f"문서{i}.txt", text) for i, text in enumerate(DOCUMENTS)]
        store = client.vector_stores.create(name="안내", file_ids=ids)
        assert wait_store(client, store.id).file_counts.completed == len(DOCUMENTS)
        yield server, client, store.id, server.openai(keys.create("agency-b"))


def test_search_is_reranked_by_the_cross_encoder(rag, reranker_dir) -> None:  # noqa: F811
    _, client, store_id, theirs = rag
    for ranker in (None, "auto", "default-2024-11-15"):
        options = {"ranker": ranker} if ranker else None
        raw = client.vector_stores.with_raw_response.search(store_id, query=QUERY, ranking_options=options)
        assert raw.headers["X-Nexus-Retrieval"] == "hybrid+rerank"
        data = raw.parse().data
        texts = [r.content[0].text for r in data]
        assert sorted(texts) == sorted(DOCUMENTS)
        expected = reference_scores(reranker_dir, QUERY, texts)
        assert [r.score for r in data] == pytest.approx(expected, abs=1e-5)
        assert expected == sorted(expected, reverse=True)
    # score_threshold cuts the cross-encoder's score, not the fused one.
    scores = [r.score for r in client.vector_stores.search(store_id, query=QUERY).data]
    cut = (scores[1] + scores[2]) / 2
    kept = client.vector_stores.search(store_id, query=QUERY, ranking_options={"score_threshold": cut}).data
    assert [r.score for r in kept] == pytest.approx(scores[:2], abs=1e-6)
    top = client.vector_stores.search(store_id, query=QUERY, max_num_results=1).data
    assert top[0].score == pytest.approx(scores[0], abs=1e-6)
    # "none": the fused ranking, normalised to (0, 1], first chunk first by both methods at 1.0 or below.
    raw = client.vector_stores.with_raw_response.search(store_id, query=QUERY, ranking_options={"ranker": "none"})
    assert raw.headers["X-Nexus-Retrieval"] == "hybrid"
    fused = [r.score for r in raw.parse().data]
    assert fused == sorted(fused, reverse=True) and 0 < fused[0] <= 1.0
    with pytest.raises(Exception) as err:
        theirs.vector_stores.search(store_id, query=QUERY)
    assert getattr(err.value, "status_code", None) == 404


def test_file_search_results_carry_the_cross_encoders_scores(rag, reranker_dir) -> None:  # noqa: F811
    _, client, store_id, _ = rag
    tool = {"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 2}
    response = client.responses.create(model="tiny-ko", input=QUERY, tools=[tool],
                                       include=["file_search_call.results"])
    results = response.output[0].results
    expected = reference_scores(reranker_dir, QUERY, [r.text for r in results])
    assert [r.score for r in results] == pytest.approx(expected, abs=1e-5) and len(results) == 2
    everything = reference_scores(reranker_dir, QUERY, DOCUMENTS)
    assert sorted(expected, reverse=True) == pytest.approx(sorted(everything, reverse=True)[:2], abs=1e-5)
    fused = client.responses.create(model="tiny-ko", input=QUERY, include=["file_search_call.results"],
                                    tools=[{**tool, "ranking_options": {"ranker": "none"}}])
    assert all(0 < r.score <= 1.0 for r in fused.output[0].results)
