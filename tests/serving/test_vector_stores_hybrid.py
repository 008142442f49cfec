"""The weights of hybrid search's fusion (OpenAI's ``ranking_options.hybrid_search``, and the server's
``--hybrid-text-weight`` / ``--hybrid-embedding-weight``): a zero weight leaves exactly the other method's
ranking (BM25 as a server without an embedding model ranks; dense as the embeddings route's cosine ranks),
both zero is a 400, and the Responses ``file_search`` tool passes the weights through."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openai
import pytest

from tests.serving.inprocess import EMBED_MODEL, make_inprocess
from tests.serving.scripted_engine import CharacterEmbedder
from tests.serving.test_vector_stores import upload, wait_store

DOCUMENTS = ["주민등록증 재발급은 가까운 주민센터에서 신청합니다.", "여권 재발급 신청은 구청 민원실에서 받습니다.",
             "운전면허증 갱신은 경찰서나 면허시험장에서 합니다.",
             "주민센터 운영 시간은 오전 9시부터 오후 6시까지입니다.",
             "김치찌개는 돼지고기와 묵은지로 끓입니다.", "재발급 수수료는 오천 원이고 신분증이 필요합니다."]
QUERY = "주민등록증 재발급 신청 장소"
TEXT_ONLY = {"hybrid_search": {"embedding_weight": 0, "text_weight": 1}}
DENSE_ONLY = {"hybrid_search": {"embedding_weight": 1, "text_weight": 0}}


def _store(client: openai.OpenAI) -> str:
    store = client.vector_stores.create(name="민원", file_ids=[upload(client, f"d{i}.txt", d)
                                                                for i, d in enumerate(DOCUMENTS)])
    assert wait_store(client, store.id).file_counts.completed == len(DOCUMENTS)
    return store.id


def _search(client: openai.OpenAI, store_id: str, **kwargs) -> list[tuple[str, float]]:
    return [(r.content[0].text, r.score) for r in client.vector_stores.search(store_id, query=QUERY, **kwargs).data]


def _rrf_scores(count: int) -> list[float]:
    """Normalised scores of one ranking alone: 1 / (60 + rank) over 1 / 61."""
    return [61 / (60 + rank) for rank in range(1, count + 1)]


@pytest.fixture
def hybrid(tiny_tokenizer, tmp_path: Path):
    server = make_inprocess(tiny_tokenizer, tmp_path, embedder=CharacterEmbedder(tiny_tokenizer),
                            data_dir=tmp_path / "data")
    with server.http:
        client = server.openai()
        yield client, _store(client)


def test_a_zero_weight_leaves_the_other_ranking(hybrid, tiny_tokenizer, tmp_path: Path) -> None:
    client, store_id = hybrid
    bm25_server = make_inprocess(tiny_tokenizer, tmp_path / "bm25", data_dir=tmp_path / "bm25-data")
    with bm25_server.http:
        plain = bm25_server.openai()
        bm25 = _search(plain, _store(plain), max_num_results=20)
    text_only = _search(client, store_id, max_num_results=20, ranking_options=TEXT_ONLY)
    assert [t for t, _ in text_only] == [t for t, _ in bm25] and len(bm25) < len(DOCUMENTS)
    assert [s for _, s in text_only] == pytest.approx(_rrf_scores(len(bm25)), abs=1e-6)

    vectors = np.asarray([e.embedding for e in client.embeddings.create(model=EMBED_MODEL,
                                                                         input=[QUERY, *DOCUMENTS]).data])
    cosine = vectors[1:] @ vectors[0] / np.linalg.norm(vectors[1:], axis=1) / np.linalg.norm(vectors[0])
    by_cosine = [DOCUMENTS[i] for i in sorted(range(len(DOCUMENTS)), key=lambda i: -cosine[i])]
    dense_only = _search(client, store_id, max_num_results=20, ranking_options=DENSE_ONLY)
    assert [t for t, _ in dense_only] == by_cosine
    assert [s for _, s in dense_only] == pytest.approx(_rrf_scores(len(DOCUMENTS)), abs=1e-6)
    assert by_cosine != [t for t, _ in bm25][:len(by_cosine)], "the example must tell the two rankings apart"

    default = _search(client, store_id, max_num_results=20)
    leaning = _search(client, store_id, max_num_results=20,
                      ranking_options={"hybrid_search": {"embedding_weight": 1, "text_weight": 3}})
    assert {t for t, _ in default} == {t for t, _ in leaning} == set(DOCUMENTS)
    assert leaning[0][0] == bm25[0][0] and max(s for _, s in leaning) <= 1.0


def test_bad_weights_are_a_400(hybrid) -> None:
    client, store_id = hybrid
    for weights in ({"embedding_weight": 0, "text_weight": 0}, {"embedding_weight": -1, "text_weight": 1},
                    {"embedding_weight": 1}):
        with pytest.raises(openai.BadRequestError) as err:
            client.vector_stores.search(store_id, query=QUERY, ranking_options={"hybrid_search": weights})
        assert err.value.status_code == 400 and "hybrid_search" in str(err.value.body)


def test_file_search_takes_the_weights_and_the_server_has_defaults(hybrid, tiny_tokenizer, tmp_path: Path) -> None:
    client, store_id = hybrid
    tool = {"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 3,
            "ranking_options": TEXT_ONLY}
    response = client.responses.create(model="tiny-ko", input=QUERY, tools=[tool],
                                       include=["file_search_call.results"])
    results = response.output[0].results
    assert [r.text for r in results] == [t for t, _ in _search(client, store_id, max_num_results=3,
                                                                ranking_options=TEXT_ONLY)]
    assert [r.score for r in results] == pytest.approx(_rrf_scores(3), abs=1e-6)

    server = make_inprocess(tiny_tokenizer, tmp_path / "dense", embedder=CharacterEmbedder(tiny_tokenizer),
                            data_dir=tmp_path / "dense-data", hybrid_text_weight=0.0)
    with server.http:
        dense_client = server.openai()
        dense_store = _store(dense_client)
        default = _search(dense_client, dense_store, max_num_results=20)
        assert default == _search(dense_client, dense_store, max_num_results=20, ranking_options=DENSE_ONLY)
        assert default != _search(dense_client, dense_store, max_num_results=20, ranking_options=TEXT_ONLY)
