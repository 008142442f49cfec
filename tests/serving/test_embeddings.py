"""``/v1/embeddings`` and ``/v1/rerank`` in-process: the real transformers pooling engine on the tiny model
(with a sentence-transformers pooling configuration), the official ``openai`` client and LangChain."""

from __future__ import annotations

import asyncio
import base64
import shutil
from pathlib import Path

import numpy as np
import openai
import pytest

from serving.security.audit import AuditStore
from serving.security.auth import KeyStore
from tests.serving.inprocess import EMBED_MODEL, MODEL, make_inprocess
from tests.serving.scripted_engine import CharacterEmbedder

TEXTS = ["서울은 대한민국의 수도입니다.", "부산은 항구 도시입니다."]


@pytest.fixture(scope="module")
def embed_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model declared as a mean-pooling, normalised embedding model with Matryoshka sizes 32 and 64."""
    from training.embed_pooling import PoolingSpec, write_pooling_files

    out = tmp_path_factory.mktemp("tiny-embed") / "model"
    shutil.copytree(tiny_model_dir, out)
    write_pooling_files(out, PoolingSpec(pooling="mean", normalize=True, dimension=128, max_length=64,
                                         matryoshka_dimensions=[32, 64]))
    return out


@pytest.fixture(scope="module")
def embedder(embed_model_dir: Path):
    from serving.engines.hf_pooling import HFPoolingEngine

    engine = asyncio.run(HFPoolingEngine.create(str(embed_model_dir), max_model_len=64))
    yield engine
    asyncio.run(engine.shutdown())


@pytest.fixture
def server(tiny_tokenizer, embedder, tmp_path):
    server = make_inprocess(tiny_tokenizer, tmp_path, embedder=embedder)
    with server.http:
        yield server


def reference_vector(model_dir: Path, text: str) -> np.ndarray:
    """Mean of the last hidden states over the text's tokens, unit length: computed here with transformers."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
    vector = hidden.mean(0).numpy()
    return vector / np.linalg.norm(vector)


def test_openai_client_gets_the_models_pooled_vectors(server, embed_model_dir, tiny_tokenizer) -> None:
    reply = server.openai().embeddings.create(model=EMBED_MODEL, input=TEXTS)  # base64 on the wire, numpy decode
    assert [d.index for d in reply.data] == [0, 1]
    first = np.asarray(reply.data[0].embedding)
    assert first.shape == (128,)
    np.testing.assert_allclose(first, reference_vector(embed_model_dir, TEXTS[0]), atol=1e-5)
    tokens = sum(len(tiny_tokenizer(t).input_ids) for t in TEXTS)
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens) == (tokens, tokens)
    floats = server.openai().embeddings.create(model=EMBED_MODEL, input=TEXTS, encoding_format="float")
    np.testing.assert_allclose(floats.data[1].embedding, reply.data[1].embedding, atol=1e-6)


def test_base64_is_little_endian_float32_and_decodes_without_numpy(server, monkeypatch) -> None:
    raw = server.http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": TEXTS[0],
                                                   "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    floats = server.http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": TEXTS[0]}).json()
    np.testing.assert_array_equal(decoded, np.asarray(floats["data"][0]["embedding"], dtype=np.float32))
    import openai.lib._parsing._embeddings as parsing

    monkeypatch.setattr(parsing, "has_numpy", lambda: False)
    without_numpy = server.openai().embeddings.create(model=EMBED_MODEL, input=TEXTS[0])
    np.testing.assert_allclose(without_numpy.data[0].embedding, decoded, atol=1e-7)


def test_token_id_inputs_embed_like_their_text(server, tiny_tokenizer) -> None:
    ids = [tiny_tokenizer(t).input_ids for t in TEXTS]
    by_text = server.openai().embeddings.create(model=EMBED_MODEL, input=TEXTS, encoding_format="float")
    by_ids = server.openai().embeddings.create(model=EMBED_MODEL, input=ids, encoding_format="float")
    one = server.openai().embeddings.create(model=EMBED_MODEL, input=ids[1], encoding_format="float")
    for a, b in zip(by_text.data, by_ids.data, strict=True):
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
    np.testing.assert_allclose(one.data[0].embedding, by_text.data[1].embedding, atol=1e-5)


def test_matryoshka_dimensions_are_unit_prefixes(server) -> None:
    full = np.asarray(server.openai().embeddings.create(model=EMBED_MODEL, input=TEXTS[0],
                                                        encoding_format="float").data[0].embedding)
    cut = np.asarray(server.openai().embeddings.create(model=EMBED_MODEL, input=TEXTS[0], dimensions=32,
                                                       encoding_format="float").data[0].embedding)
    np.testing.assert_allclose(cut, full[:32] / np.linalg.norm(full[:32]), atol=1e-6)
    with pytest.raises(openai.BadRequestError, match=r"dimensions=50 is not supported.*\[32, 64\]"):
        server.openai().embeddings.create(model=EMBED_MODEL, input=TEXTS[0], dimensions=50)


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"input": ""}, "input", "empty"),
    ({"input": []}, "input", None),
    ({"input": ["가"] * 2049}, "input", None),
    ({"input": "가나다라마바사 " * 40}, "input", r"input\[0\] has \d+ tokens, more than this model's limit of 64"),
    ({"input": [[1, 2, 10**9]]}, "input", "token ids"),
    ({"model": MODEL}, "model", "is a text generation model"),
    ({"model": "없는-모델"}, "model", "does not exist"),
])
def test_bad_embedding_requests_are_clear_400s(server, body, param, message) -> None:
    reply = server.http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": "안녕", **body})
    assert reply.status_code == (404 if body.get("model") == "없는-모델" else 400), reply.text
    error = reply.json()["error"]
    assert error["param"] == param or error["param"].startswith(param)
    if message:
        assert pytest.importorskip("re").search(message, error["message"])


def test_over_long_inputs_are_cut_when_asked(server) -> None:
    reply = server.http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": "가나다라마바사 " * 40,
                                                     "truncate_prompt_tokens": 16})
    assert reply.status_code == 200 and reply.json()["usage"]["prompt_tokens"] == 16


def test_embedding_model_refuses_chat_and_is_listed(server) -> None:
    with pytest.raises(openai.BadRequestError, match="is an embedding model"):
        server.openai().chat.completions.create(model=EMBED_MODEL, messages=[{"role": "user", "content": "안녕"}])
    assert [m.id for m in server.openai().models.list().data] == [MODEL, "tiny-lora", EMBED_MODEL]


def test_embeddings_are_charged_and_audited(server) -> None:
    key = KeyStore(server.database_url).create("통계청", token_quota=1000)
    reply = server.openai(key).embeddings.create(model=EMBED_MODEL, input=TEXTS, user="분석관")
    row = AuditStore(server.database_url).recent(1)[0]
    assert (row.path, row.model, row.prompt_tokens, row.end_user) == (
        "/v1/embeddings", EMBED_MODEL, reply.usage.prompt_tokens, "분석관")
    assert KeyStore(server.database_url).list()[0].tokens_used == reply.usage.prompt_tokens


def test_langchain_openai_embeddings(server) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    embeddings = langchain_openai.OpenAIEmbeddings(
        model=EMBED_MODEL, base_url="http://testserver/v1", api_key="unused", http_client=server.http,
        check_embedding_ctx_length=False)  # else it sends tiktoken ids, meaningless to a Korean model
    vectors = embeddings.embed_documents(TEXTS)
    query = embeddings.embed_query(TEXTS[0])
    assert len(vectors) == 2 and len(vectors[0]) == 128
    np.testing.assert_allclose(query, vectors[0], atol=1e-5)


def test_rerank_orders_korean_documents_by_relevance(tiny_tokenizer, tmp_path) -> None:
    server = make_inprocess(tiny_tokenizer, tmp_path, embedder=CharacterEmbedder(tiny_tokenizer))
    documents = ["오늘 부산의 날씨는 맑습니다.", "주민등록증 재발급은 주민센터에서 신청합니다.", "김치찌개 만드는 법"]
    with server.http:
        for path in ("/v1/rerank", "/v2/rerank"):
            reply = server.http.post(path, json={"model": EMBED_MODEL, "query": "주민등록증 재발급 신청",
                                                 "documents": documents, "top_n": 2})
            assert reply.status_code == 200, reply.text
            results = reply.json()["results"]
            assert results[0]["index"] == 1 and len(results) == 2
            assert results[0]["relevance_score"] > results[1]["relevance_score"]
            assert results[0]["document"]["text"] == documents[1]
        bare = server.http.post("/v1/rerank", json={"model": EMBED_MODEL, "query": "날씨", "documents": documents,
                                                    "return_documents": False}).json()
        assert bare["results"][0]["index"] == 0 and bare["results"][0]["document"] is None
        assert bare["usage"]["total_tokens"] > 0
