"""The FastAPI application: ``build_app(settings, engine)``. No app is created at import time."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexus_k import __version__
from serving.config import ServerSettings
from serving.engines import load_engine, load_parsers
from serving.engines.base import Engine, EngineError
from serving.errors import APIError, validation_message
from serving.metrics import ServerMetrics
from serving.state import ServerState
from serving.usage import usage_of

logger = logging.getLogger(__name__)

API_PREFIXES = ("/v1/", "/tokenize", "/detokenize")


def _answer(request: Request, error: APIError) -> JSONResponse:
    usage_of(request.state).error_type = error.type
    return error.response()


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return _answer(request, exc)

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, exc: EngineError) -> JSONResponse:
        return _answer(request, APIError(str(exc), 400))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc.errors())
        return _answer(request, APIError(message, 400, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 400 and message == "There was an error parsing the body":
            message = "We could not parse the JSON body of your request (malformed or nested too deeply)."
        return _answer(request, APIError(message, exc.status_code, kind, headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return _answer(request, APIError("The server had an error while processing your request.", 500,
                                         "server_error"))


class RequestMetricsMiddleware:
    """Counts API requests by endpoint and status and times them (streams until their last byte)."""

    def __init__(self, app: ASGIApp, state_holder: FastAPI) -> None:
        self.app = app
        self.holder = state_holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(API_PREFIXES):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            nexus = getattr(self.holder.state, "nexus", None)
            if nexus is not None:
                endpoint = path if not path.startswith("/v1/models/") else "/v1/models/{id}"
                nexus.metrics.requests.labels(endpoint, str(status["code"])).inc()
                nexus.metrics.request_latency.labels(endpoint).observe(time.perf_counter() - start)
                usage = usage_of(scope.setdefault("state", {}))
                nexus.metrics.count_tokens(usage.prompt_tokens, usage.completion_tokens)


def _attach(app: FastAPI, settings: ServerSettings, engine: Engine, embedder: Engine | None,
            reranker: Engine | None = None) -> None:
    name = settings.served_model_name or settings.model or engine.model_path
    embedding_name = rerank_name = None
    if embedder is not None:
        embedding_name = settings.served_embedding_model_name or settings.embedding_model or embedder.model_path
    if reranker is not None:
        rerank_name = settings.served_rerank_model_name or settings.rerank_model or reranker.model_path

    def unfinished() -> int:
        return sum(e.num_unfinished_requests() for e in (engine, embedder, reranker) if e is not None)

    parsers = None
    if engine.runner == "generate":
        parsers = load_parsers(engine.tokenizer, settings.tool_call_parser, settings.reasoning_parser)
    app.state.nexus = ServerState(settings, engine, name, ServerMetrics(unfinished), embedder, embedding_name,
                                  parsers, reranker, rerank_name)


def build_app(settings: ServerSettings, engine: Engine | None = None, embedder: Engine | None = None,
              reranker: Engine | None = None) -> FastAPI:
    """The server app. With ``engine`` (and ``embedder``, ``reranker``) the caller owns them; without, the app
    starts them from ``settings``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from serving.batch_runner import batch_runner
        from serving.handlers.vector_stores import ingestion

        async with engines(app), batch_runner(app, settings), ingestion(app):
            yield

    @asynccontextmanager
    async def engines(app: FastAPI) -> AsyncIterator[None]:
        if engine is not None:
            yield
            return
        if settings.model is None:
            raise EngineError("no model given")
        own = await load_engine(settings.engine_settings())
        own_embedder = own_reranker = None
        try:
            if settings.embedding_model is not None:
                own_embedder = await load_engine(settings.embedding_engine_settings())
            if settings.rerank_model is not None:
                own_reranker = await load_engine(settings.rerank_engine_settings())
            _attach(app, settings, own, own_embedder, own_reranker)
            # Everything loaded so far (modules, tokenizer, engine client) lives as long as the server: keep it
            # out of the garbage collector's full passes, which otherwise stall streams while they walk it.
            gc.collect()
            gc.freeze()
            yield
        finally:
            await own.shutdown()
            for side in (own_embedder, own_reranker):
                if side is not None:
                    await side.shutdown()

    app = FastAPI(title="Nexus-K", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible API for Korean LLMs served on your own machines.")
    if engine is not None:
        _attach(app, settings, engine, embedder, reranker)
    _install_error_handlers(app)

    from serving.routes import batches, embeddings, files, identity, openai, ops, quantum, responses, vector_stores

    app.include_router(openai.router)
    app.include_router(responses.router)
    app.include_router(embeddings.router)
    app.include_router(ops.router)
    app.include_router(quantum.router)
    app.include_router(files.router)
    app.include_router(batches.router)
    app.include_router(identity.router)
    app.include_router(vector_stores.router)
    app.include_router(openai.unknown_paths)  # after every real route, before the chat page's files
    app.add_middleware(RequestMetricsMiddleware, state_holder=app)

    from serving.security.install import install_security

    install_security(app, settings)
    if settings.web_ui and (settings.web_dir / "index.html").is_file():
        app.mount("/", StaticFiles(directory=settings.web_dir, html=True), name="web")
    return app
