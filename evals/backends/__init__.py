"""Backends by name: ``hf`` (transformers in-process), ``vllm`` / ``engine-hf`` (the serving engines in
process), ``openai`` (an OpenAI-compatible endpoint). ``auto`` picks openai with a base URL, else vLLM
when it is installed, else transformers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from evals.backends.base import LM
from nexus_k.core.errors import UserError

if TYPE_CHECKING:
    from evals.config import RunConfig

BackendFactory = Callable[["RunConfig"], LM]
BACKENDS: dict[str, BackendFactory] = {}
"""Registered backend factories by name."""


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Decorator: make a factory ``(RunConfig) -> LM`` available as ``--backend name``."""

    def wrap(factory: BackendFactory) -> BackendFactory:
        BACKENDS[name] = factory
        return factory

    return wrap


@register_backend("hf")
def _hf(config: RunConfig) -> LM:
    from evals.backends.hf import HFBackend

    return HFBackend(config.model, dtype=config.dtype, device=config.device, batch_size=config.batch_size,
                     adapter=config.adapter, **config.extra)


@register_backend("vllm")
def _vllm(config: RunConfig) -> LM:
    from evals.backends.engine import EngineBackend

    return EngineBackend(config.model, kind="vllm", dtype=config.dtype, **config.extra)


@register_backend("engine-hf")
def _engine_hf(config: RunConfig) -> LM:
    from evals.backends.engine import EngineBackend

    return EngineBackend(config.model, kind="hf", dtype=config.dtype, device=config.device, **config.extra)


@register_backend("openai")
def _openai(config: RunConfig) -> LM:
    import os

    from evals.backends.openai_api import OpenAIBackend

    if not config.base_url:
        raise UserError("the openai backend needs --base-url (e.g. http://localhost:8000/v1)")
    key = config.api_key or os.environ.get("OPENAI_API_KEY")
    return OpenAIBackend(config.model, base_url=config.base_url, api_key=key, api=config.api,
                         concurrency=config.batch_size, **config.extra)


def resolve_backend_name(config: RunConfig) -> str:
    """The backend ``auto`` stands for with this configuration."""
    if config.backend != "auto":
        return config.backend
    if config.base_url:
        return "openai"
    from serving.engines import vllm_available

    return "vllm" if vllm_available() else "hf"


def load_backend(config: RunConfig) -> LM:
    """Start the backend the configuration asks for."""
    name = resolve_backend_name(config)
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; choose one of auto, {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](config)
