"""The real app around a scripted engine, driven in-process (no sockets): FastAPI's TestClient is an
``httpx.Client``, so the official ``openai`` client runs on it unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.app import build_app
from serving.config import ServerSettings
from tests.serving.scripted_engine import ScriptedEngine

MODEL = "tiny-ko"
EMBED_MODEL = "tiny-embed"
RERANK_MODEL = "tiny-rerank"


@dataclass
class InProcessServer:
    """An app, its scripted engine, an HTTP client and the database it writes keys and audit rows to."""

    app: FastAPI
    engine: ScriptedEngine
    http: TestClient
    database_url: str

    def openai(self, api_key: str = "unused") -> openai.OpenAI:
        """The official client on this app."""
        return openai.OpenAI(base_url="http://testserver/v1", api_key=api_key, http_client=self.http, max_retries=0)


def scripted_app(tokenizer: Any, database_url: str, engine: ScriptedEngine | None = None,
                 embedder: Any = None, reranker: Any = None, **settings: Any) -> FastAPI:
    """The real app (routes, handlers, security) on ``engine`` (a default scripted one), served as ``tiny-ko``,
    with ``embedder`` (a pooling engine) as ``tiny-embed`` and ``reranker`` (a scoring engine) as
    ``tiny-rerank`` when given."""
    engine = engine or ScriptedEngine(tokenizer, loras=["tiny-lora"])
    if embedder is not None:
        settings = {"embedding_model": embedder.model_path, "served_embedding_model_name": EMBED_MODEL, **settings}
    if reranker is not None:
        settings = {"rerank_model": reranker.model_path, "served_rerank_model_name": RERANK_MODEL, **settings}
    config = ServerSettings(model=engine.model_path, engine="hf", served_model_name=MODEL,
                            database_url=database_url, **settings)
    return build_app(config, engine, embedder, reranker)


def scripted_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (multi-process tests): tokenizer folder, database and per-token delay
    from ``NEXUS_K_TEST_TOKENIZER``, ``NEXUS_K_DATABASE_URL`` and ``NEXUS_K_TEST_TOKEN_DELAY``."""
    import os

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(os.environ["NEXUS_K_TEST_TOKENIZER"])
    delay = float(os.environ.get("NEXUS_K_TEST_TOKEN_DELAY", "0"))
    return scripted_app(tokenizer, os.environ["NEXUS_K_DATABASE_URL"], ScriptedEngine(tokenizer, token_delay=delay))


def make_inprocess(tokenizer: Any, tmp_path: Path, engine: ScriptedEngine | None = None, embedder: Any = None,
                   reranker: Any = None, **settings: Any) -> InProcessServer:
    """Build the app on ``engine`` (a default scripted one) with a fresh SQLite database under ``tmp_path``."""
    database_url = f"sqlite:///{tmp_path / 'server.db'}"
    engine = engine or ScriptedEngine(tokenizer, loras=["tiny-lora"])
    app = scripted_app(tokenizer, database_url, engine, embedder, reranker, **settings)
    return InProcessServer(app, engine, TestClient(app), database_url)
