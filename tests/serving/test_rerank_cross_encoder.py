"""``/v1/rerank`` with a served cross-encoder (``--rerank-model``): the real transformers scoring engine on a
tiny random sequence classifier (the tiny Llama with a 1-label head), in-process, checked against transformers
run directly on the same (query, document) pairs."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from pathlib import Path

import pytest

from serving.config import ServerSettings
from serving.engines.base import EngineError
from tests.serving.inprocess import EMBED_MODEL, MODEL, RERANK_MODEL, make_inprocess
from tests.serving.scripted_engine import CharacterEmbedder

QUERY = "주민등록증 재발급 신청"
DOCUMENTS = ["오늘 부산의 날씨는 맑습니다.", "주민등록증 재발급은 주민센터에서 신청합니다.", "김치찌개 만드는 법",
             "여권 발급 안내"]


@pytest.fixture(scope="module")
def reranker_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama as ``LlamaForSequenceClassification`` with one label, its head drawn wide enough (seeded)
    that the pairs' scores differ clearly."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-rerank") / "model"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 0.1)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def reranker(reranker_dir: Path):
    from serving.engines.hf_scoring import HFScoringEngine

    engine = asyncio.run(HFScoringEngine.create(str(reranker_dir), max_model_len=64))
    yield engine
    asyncio.run(engine.shutdown())


@pytest.fixture
def server(tiny_tokenizer, reranker, tmp_path):
    server = make_inprocess(tiny_tokenizer, tmp_path, embedder=CharacterEmbedder(tiny_tokenizer), reranker=reranker)
    with server.http:
        yield server


def reference_scores(model_dir: Path, query: str, documents: list[str]) -> list[float]:
    """sigmoid of the classifier's logit for each pair, one pair at a time (no padding): transformers directly."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return [float(torch.sigmoid(model(**tokenizer(query, doc, return_tensors="pt")).logits[0, 0]))
                for doc in documents]


def test_scores_are_the_cross_encoders_on_each_pair(server, reranker_dir, tiny_tokenizer) -> None:
    documents = [*DOCUMENTS[:3], {"text": DOCUMENTS[3]}]
    reply = server.http.post("/v1/rerank", json={"model": RERANK_MODEL, "query": QUERY, "documents": documents})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    expected = reference_scores(reranker_dir, QUERY, DOCUMENTS)
    assert len(set(round(s, 3) for s in expected)) == len(expected)  # the head spreads them: the order is tested
    assert [r["index"] for r in body["results"]] == sorted(range(4), key=lambda i: -expected[i])
    for result in body["results"]:
        assert result["relevance_score"] == pytest.approx(expected[result["index"]], abs=1e-5)
        assert result["document"]["text"] == DOCUMENTS[result["index"]]
    assert body["model"] == RERANK_MODEL
    assert body["usage"]["total_tokens"] == sum(len(tiny_tokenizer(QUERY, d).input_ids) for d in DOCUMENTS)


def test_top_n_return_documents_and_v2(server, reranker_dir) -> None:
    expected = reference_scores(reranker_dir, QUERY, DOCUMENTS)
    best = sorted(range(4), key=lambda i: -expected[i])[:2]
    for path in ("/v1/rerank", "/v2/rerank"):
        body = server.http.post(path, json={"model": RERANK_MODEL, "query": QUERY, "documents": DOCUMENTS,
                                            "top_n": 2, "return_documents": False}).json()
        assert [r["index"] for r in body["results"]] == best
        assert all(r["document"] is None for r in body["results"])


def test_the_embedding_model_still_ranks_by_cosine(server) -> None:
    body = server.http.post("/v1/rerank", json={"model": EMBED_MODEL, "query": QUERY, "documents": DOCUMENTS}).json()
    assert body["results"][0]["index"] == 1  # shared words: the character embedder's cosine


def test_wrong_model_types_are_clear_400s(server) -> None:
    reply = server.http.post("/v1/rerank", json={"model": MODEL, "query": QUERY, "documents": DOCUMENTS})
    assert reply.status_code == 400 and "is a text generation model" in reply.json()["error"]["message"]
    reply = server.http.post("/v1/embeddings", json={"model": RERANK_MODEL, "input": QUERY})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["message"] == f"The model `{RERANK_MODEL}` is a reranker: use /v1/rerank with it."
    reply = server.http.post("/v1/chat/completions", json={"model": RERANK_MODEL,
                                                           "messages": [{"role": "user", "content": "안녕"}]})
    assert reply.status_code == 400 and "is a reranker" in reply.json()["error"]["message"]
    assert server.http.post("/v1/rerank", json={"model": "없는-모델", "query": QUERY,
                                                "documents": DOCUMENTS}).status_code == 404


def test_reranker_is_listed_with_its_context(server) -> None:
    models = {m["id"]: m for m in server.http.get("/v1/models").json()["data"]}
    assert list(models) == [MODEL, "tiny-lora", EMBED_MODEL, RERANK_MODEL]
    assert models[RERANK_MODEL]["max_model_len"] == 64


def test_an_over_long_pair_names_its_document(server) -> None:
    reply = server.http.post("/v1/rerank", json={"model": RERANK_MODEL, "query": QUERY,
                                                 "documents": ["짧은 글", "가나다라마바사 " * 20]})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "documents" and error["message"].startswith("documents[1] has ")


def test_a_reranker_served_alone_answers_rerank_only(tiny_tokenizer, reranker, reranker_dir, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from serving.app import build_app

    settings = ServerSettings(model=str(reranker_dir), engine="hf", runner="score", served_model_name="alone",
                              database_url=f"sqlite:///{tmp_path / 'server.db'}")
    with TestClient(build_app(settings, reranker)) as http:
        body = http.post("/v1/rerank", json={"model": "alone", "query": QUERY, "documents": DOCUMENTS}).json()
        assert sorted(r["index"] for r in body["results"]) == [0, 1, 2, 3]
        reply = http.post("/v1/embeddings", json={"model": "alone", "input": QUERY})
        assert reply.status_code == 400 and "is a reranker" in reply.json()["error"]["message"]


def test_only_one_label_classifiers_are_rerankers(reranker_dir, tmp_path) -> None:
    from serving.engines.hf_scoring import HFScoringEngine

    two = tmp_path / "two-labels"
    shutil.copytree(reranker_dir, two)
    config = json.loads((two / "config.json").read_text())
    config["id2label"] = {"0": "no", "1": "yes"}
    (two / "config.json").write_text(json.dumps(config))
    with pytest.raises(EngineError, match="has 2 output labels: a reranker needs one"):
        asyncio.run(HFScoringEngine.create(str(two)))


def test_rerank_settings_start_a_scoring_engine_beside_the_chat_model() -> None:
    settings = ServerSettings(model="chat", engine="hf", dtype="bfloat16", rerank_model="rerank-dir")
    engine = settings.rerank_engine_settings()
    assert (engine.model, engine.engine, engine.runner, engine.dtype) == ("rerank-dir", "hf", "score", "bfloat16")
    assert ServerSettings(model="chat", rerank_model="r", rerank_engine="hf").rerank_engine_settings().engine == "hf"


def test_a_declared_identity_activation_gives_raw_logits(reranker_dir, tmp_path) -> None:
    from serving.engines.base import PairPrompt
    from serving.engines.hf_scoring import IDENTITY, HFScoringEngine

    raw = tmp_path / "raw"
    shutil.copytree(reranker_dir, raw)
    config = json.loads((raw / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": IDENTITY}
    (raw / "config.json").write_text(json.dumps(config))
    engine = asyncio.run(HFScoringEngine.create(str(raw)))
    pairs = [PairPrompt(list(ids)) for ids in engine.tokenizer([QUERY] * 2, DOCUMENTS[:2]).input_ids]
    logits = asyncio.run(engine.score(pairs, "raw"))
    expected = reference_scores(reranker_dir, QUERY, DOCUMENTS[:2])
    assert logits == pytest.approx([math.log(p / (1 - p)) for p in expected], abs=1e-4)
