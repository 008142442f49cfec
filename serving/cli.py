"""``nexus-k serve`` and ``nexus-k model``: command functions only; heavy imports happen inside them."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from nexus_k.core.errors import UserError
from serving.keys_cli import app as keys_app

logger = logging.getLogger(__name__)
model_app = typer.Typer(no_args_is_help=True)


def _parse_loras(items: list[str]) -> dict[str, str]:
    loras: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--lora takes NAME=PATH, got {item!r}")
        if not (Path(path) / "adapter_config.json").is_file():
            raise UserError(f"--lora {name}: {path} is not a LoRA adapter folder (no adapter_config.json)")
        loras[name] = path
    return loras


def _demo_model(loras: dict[str, str]) -> tuple[str, str]:
    """Prepare the bundled Korean demo model; returns (model folder, served base name)."""
    from serving import demo_model

    path = demo_model.prepare_demo_model(progress=True)
    adapter = demo_model.demo_adapter_dir()
    if adapter is not None:
        loras.setdefault(demo_model.DEMO_MODEL_NAME, str(adapter))
    return str(path), demo_model.DEMO_BASE_NAME


def serve(
    model: str | None = typer.Option(None, "--model", help="HF folder or hub id (default: bundled Korean demo)."),
    engine: str = typer.Option("vllm", "--engine", help="vllm (default) or hf (transformers)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    served_model_name: str | None = typer.Option(None, "--served-model-name", help="Name clients send."),
    max_model_len: int | None = typer.Option(None, "--max-model-len", help="Context length cap."),
    tensor_parallel_size: int = typer.Option(1, "--tensor-parallel-size", help="vLLM: GPUs per replica."),
    pipeline_parallel_size: int = typer.Option(1, "--pipeline-parallel-size", help="vLLM: pipeline stages."),
    lora: list[str] = typer.Option([], "--lora", help="LoRA adapter NAME=PATH (repeatable)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, bfloat16, float16 or float32."),
    enforce_eager: bool = typer.Option(False, "--enforce-eager", help="vLLM: no graph compilation."),
    kv_cache_gib: float = typer.Option(2.0, "--kv-cache-gib", help="vLLM on CPU: KV cache size."),
    engine_core_priority: str | None = typer.Option(
        None, "--engine-core-priority",
        help="vLLM on CPU: priority of vLLM's busy-waiting engine core (default low; docs/serving.md)."),
    allow_hub: bool = typer.Option(False, "--allow-hub", help="Allow downloading the model from the hub."),
    timeout_graceful_shutdown: int = typer.Option(
        30, "--timeout-graceful-shutdown", min=1,
        help="On SIGTERM: seconds to let requests in flight finish (new ones get 503) before cutting them."),
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API, with the Korean chat page at /."""
    import os

    if allow_hub:
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ.pop(var, None)
    if engine not in ("vllm", "hf"):
        raise UserError(f"--engine must be vllm or hf, not {engine!r}")
    loras = _parse_loras(lora)
    if model is None:
        model, default_name = _demo_model(loras)
        served_model_name = served_model_name or default_name
    elif not Path(model).exists() and os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in model:
        raise UserError(f"model {model!r} is neither a folder nor a hub id")
    if engine == "vllm":
        from serving.engines import vllm_available

        if not vllm_available():
            raise UserError("vLLM is not installed here; install it (`make install`) or pass --engine hf")

    from serving.app import build_app
    from serving.config import ServerSettings

    if engine_core_priority not in (None, "normal", "low", "idle"):
        raise UserError(f"--engine-core-priority must be normal, low or idle, not {engine_core_priority!r}")
    settings = ServerSettings(
        model=model, engine=engine, host=host, port=port, served_model_name=served_model_name,
        max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size,
        pipeline_parallel_size=pipeline_parallel_size, lora=loras, dtype=dtype, enforce_eager=enforce_eager,
        kv_cache_gib=kv_cache_gib,
        **({"engine_core_priority": engine_core_priority} if engine_core_priority else {}),
    )
    typer.echo(f"Nexus-K: starting the {engine} engine on {model} (first start can take minutes)...", err=True)
    from serving.drain import run_server

    app = build_app(settings)
    run_server(app, app.state.drain, host=host, port=port, graceful_timeout_s=timeout_graceful_shutdown)


@model_app.command("tiny")
def model_tiny(
    out_dir: Path = typer.Argument(..., help="Folder to write the model into."),
    preset: str = typer.Option("tiny", "--preset", help="tiny (~1M params), small (~5M) or 100m."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
) -> None:
    """Write a small random-weight Llama model with a Korean BPE tokenizer and a chat template."""
    from dataclasses import replace

    from training.tiny_model import PRESETS, build_tiny_model

    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    path = build_tiny_model(out_dir, preset, replace(PRESETS[preset], seed=seed))
    typer.echo(str(path))


@model_app.command("demo")
def model_demo() -> None:
    """Verify and convert the bundled Korean demo model (Gemma 3 270M) into the cache; print its folder."""
    from serving import demo_model

    typer.echo(str(demo_model.prepare_demo_model(progress=True)))


__all__ = ["keys_app", "model_app", "serve"]
