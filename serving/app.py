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
from serving.engines import load_engine
from serving.engines.base import Engine, EngineError
from serving.errors import APIError
from serving.metrics import ServerMetrics
from serving.state import ServerState

logger = logging.getLogger(__name__)

API_PREFIXES = ("/v1/", "/tokenize", "/detokenize")


def engine_options(settings: ServerSettings) -> dict:
    """Engine ``create`` options from server settings."""
    return {
        "max_model_len": settings.max_model_len,
        "dtype": settings.dtype,
        "lora_modules": settings.lora or None,
        "max_lora_rank": settings.max_lora_rank,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "pipeline_parallel_size": settings.pipeline_parallel_size,
        "enforce_eager": settings.enforce_eager,
        "kv_cache_gib": settings.kv_cache_gib,
        "engine_core_priority": settings.engine_core_priority,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "max_num_seqs": settings.max_num_seqs,
    }


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    first = err.errors()[0] if err.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if first.get("type") == "json_invalid":
        return "We could not parse the JSON body of your request: it is not valid JSON.", None
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    return (f"{param}: {message}" if param else message), param


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(EngineError)
    async def _engine_error(_: Request, exc: EngineError) -> JSONResponse:
        return APIError(str(exc), 400).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return APIError(message, 400, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 400 and message == "There was an error parsing the body":
            message = "We could not parse the JSON body of your request (malformed or nested too deeply)."
        return APIError(message, exc.status_code, kind, headers=dict(exc.headers or {})).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return APIError("The server had an error while processing your request.", 500, "server_error").response()


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


def _attach(app: FastAPI, settings: ServerSettings, engine: Engine) -> None:
    name = settings.served_model_name or settings.model or engine.model_path
    app.state.nexus = ServerState(settings, engine, name, ServerMetrics(engine.num_unfinished_requests))


def build_app(settings: ServerSettings, engine: Engine | None = None) -> FastAPI:
    """The server app. With ``engine`` the caller owns it; without, the app starts one from ``settings``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine is not None:
            yield
            return
        if settings.model is None:
            raise EngineError("no model given")
        own = await load_engine(settings.engine, settings.model, **engine_options(settings))
        _attach(app, settings, own)
        # Everything loaded so far (modules, tokenizer, engine client) lives as long as the server: keep it
        # out of the garbage collector's full passes, which otherwise stall streams while they walk it.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await own.shutdown()

    app = FastAPI(title="Nexus-K", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible API for Korean LLMs served on your own machines.")
    if engine is not None:
        _attach(app, settings, engine)
    _install_error_handlers(app)

    from serving.routes import openai, ops, quantum

    app.include_router(openai.router)
    app.include_router(ops.router)
    app.include_router(quantum.router)
    app.add_middleware(RequestMetricsMiddleware, state_holder=app)

    from serving.security import install_security

    install_security(app, settings)
    if settings.web_ui and (settings.web_dir / "index.html").is_file():
        app.mount("/", StaticFiles(directory=settings.web_dir, html=True), name="web")
    return app
