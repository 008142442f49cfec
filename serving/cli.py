"""``nexus-k serve`` and ``nexus-k model``: command functions only; heavy imports happen inside them."""

from __future__ import annotations

import inspect
import json
import logging
import typing
from pathlib import Path
from typing import Any

import typer
import yaml

from nexus_k.core.errors import UserError
from serving.security.keys_cli import app as keys_app

logger = logging.getLogger(__name__)


def _key_values(flag: str, items: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` items of a repeatable option as a mapping."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value:
            raise UserError(f"{flag} takes NAME=VALUE, got {item!r}")
        out[name.strip()] = value
    return out


def _engine_arg_value(text: str) -> Any:
    """A command-line engine-argument value as YAML reads it: numbers, booleans, lists and mappings typed."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _passthrough_args(args: list[str]) -> dict[str, Any]:
    """vLLM-style flags that are not ours (``--quantization awq``, ``--enforce-eager``) as engine arguments."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise UserError(f"unexpected argument {arg!r} (options start with --; see `nexus-k serve --help`)")
        name, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            else:
                value = "true"
        out[name.replace("-", "_")] = _engine_arg_value(value)
        i += 1
    return out


def _check_loras(loras: dict[str, str]) -> None:
    for name, path in loras.items():
        if not (Path(path) / "adapter_config.json").is_file():
            raise UserError(f"--lora {name}: {path} is not a LoRA adapter folder (no adapter_config.json)")


def _check_parsers(tool_call_parser: str, reasoning_parser: str | None) -> None:
    """The output parsers must be vLLM's (checked before the engine starts)."""
    from serving.engines import EngineError, vllm_available

    if not vllm_available():
        if reasoning_parser or tool_call_parser != "hermes":
            raise UserError("--tool-call-parser and --reasoning-parser use vLLM's parsers: install vLLM")
        return
    from serving.engines.vllm_parsers import check_parser_names

    try:
        check_parser_names(tool_call_parser, reasoning_parser)
    except EngineError as err:
        raise UserError(str(err)) from None


def _demo_embedder(served_name: str | None) -> dict[str, Any]:
    """The bundled Korean embedding model's settings (merged into the cache once), or none if not shipped."""
    from serving.demo_embedder import DEMO_EMBED_NAME, prepare_demo_embedder

    folder = prepare_demo_embedder(progress=True)
    if folder is None:
        return {}
    return {"embedding_model": str(folder), "served_embedding_model_name": served_name or DEMO_EMBED_NAME,
            "embedding_engine": "hf"}


def _demo_model(loras: dict[str, str], int8: bool) -> tuple[str, str]:
    """Prepare the bundled Korean demo model (its int8 copy with ``int8``); returns (model folder, served base
    name)."""
    from serving import demo_model

    path = demo_model.prepare_demo_int8(progress=True) if int8 else demo_model.prepare_demo_model(progress=True)
    adapter = demo_model.demo_adapter_dir()
    if adapter is not None:
        loras.setdefault(demo_model.DEMO_MODEL_NAME, str(adapter))
    return str(path), demo_model.DEMO_BASE_NAME


def _trimmed(settings: Any) -> Any:
    """The settings with the model replaced by its vocabulary trim to ``--trim-vocab`` (made once, cached)."""
    from serving.trim_cache import trimmed_model_dir

    folder = trimmed_model_dir(settings.model, settings.trim_vocab, settings.engine_args.get("revision"))
    typer.echo(f"Nexus-K: serving {settings.model} trimmed to the vocabulary of {', '.join(settings.trim_vocab)} "
               f"(cached at {folder})", err=True)
    return settings.model_copy(update={"model": str(folder),
                                       "served_model_name": settings.served_model_name or settings.model})


def _scalar_type(annotation: Any) -> type:
    """The command-line type of a setting: bool, int or float where the annotation holds one, else str."""
    args = typing.get_args(annotation) or (annotation,)
    return next((t for t in (bool, int, float) if t in args), str)


def _cli_parameters() -> list[inspect.Parameter]:
    """One ``--option`` per server setting, generated from ``ServerSettings`` (the settings' one declaration)."""
    from serving.config import ServerSettings
    from serving.engines.settings import cli_flag

    params = []
    for name, field in ServerSettings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("cli") is False:
            continue
        flag = cli_flag(name)
        kind = _scalar_type(field.annotation)
        help_text = field.description or ""
        if name in ("lora", "engine_args"):
            annotation: Any = list[str] | None
            option = typer.Option(None, flag, help=help_text + " Repeatable NAME=VALUE.")
        elif kind is bool:
            annotation = bool | None
            option = typer.Option(None, f"{flag}/--no-{flag[2:]}", help=help_text, show_default=False)
        else:
            annotation = kind | None
            option = typer.Option(None, flag, help=help_text, show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    params.append(inspect.Parameter(
        "config", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
        default=typer.Option(None, "--config", help="A YAML file of these settings (and an engine_args: mapping).")))
    params.append(inspect.Parameter(
        "allow_hub", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
        default=typer.Option(False, "--allow-hub", help="Allow downloading the model from the hub.")))
    return params


def serve(ctx: typer.Context, **options: Any) -> None:
    """Serve a model over an OpenAI-compatible HTTP API, with the Korean chat page at /.

    Any other --flag is one of vLLM's engine arguments (--quantization awq, --tensor-parallel-size 4, ...).
    """
    import os

    from serving.config import resolve_settings

    config_file, allow_hub = options.pop("config"), options.pop("allow_hub")
    if allow_hub:
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ.pop(var, None)
    values = {k: v for k, v in options.items() if v is not None}
    if "lora" in values:
        values["lora"] = _key_values("--lora", values["lora"])
        _check_loras(values["lora"])
    engine_args = _passthrough_args(list(ctx.args))
    if "engine_args" in values:
        engine_args |= {k: _engine_arg_value(v) for k, v in _key_values("--engine-arg", values["engine_args"]).items()}
    if engine_args:
        values["engine_args"] = engine_args
    settings = resolve_settings(values, config_file)
    if settings.model is None:
        loras = dict(settings.lora)
        model, default_name = _demo_model(loras, settings.demo_precision == "int8")
        demo = {"model": model, "lora": loras, "served_model_name": settings.served_model_name or default_name}
        if settings.embedding_model is None:
            demo.update(_demo_embedder(settings.served_embedding_model_name))
        settings = resolve_settings({**values, **demo}, config_file)
    elif not Path(settings.model).exists() and os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in settings.model:
        raise UserError(f"model {settings.model!r} is neither a folder nor a hub id")
    if settings.trim_vocab:
        settings = _trimmed(settings)
    if settings.engine == "vllm":
        from serving.engines import vllm_available

        if not vllm_available():
            raise UserError("vLLM is not installed here; install it (`make install`) or pass --engine hf")
        from serving.engines.base import EngineError
        from serving.engines.vllm import validate_engine_config

        try:
            validate_engine_config(settings.engine_settings())
        except EngineError as err:
            raise UserError(str(err)) from None
    _check_parsers(settings.tool_call_parser, settings.reasoning_parser)
    logger.info("settings: %s", json.dumps(settings.summary(), ensure_ascii=False))
    typer.echo(f"Nexus-K: starting the {settings.engine} engine on {settings.model} (first start can take "
               "minutes)...", err=True)
    from serving.app import build_app
    from serving.drain import run_server

    app = build_app(settings)
    run_server(app, app.state.drain, host=settings.host, port=settings.port,
               graceful_timeout_s=settings.timeout_graceful_shutdown)


serve.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
     *_cli_parameters()])
SERVE_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


def model_demo(
    full_vocab: bool = typer.Option(False, "--full-vocab", help="The untrimmed conversion (262,144 tokens)."),
) -> None:
    """Verify and convert the bundled Korean demo model (Gemma 3 270M, vocabulary trimmed) into the cache;
    print its folder."""
    from serving import demo_model

    typer.echo(str(demo_model.prepare_demo_model(progress=True, full_vocab=full_vocab)))


def model_int8(
    model: Path = typer.Option(..., "--model", help="HF folder of a causal LM (bf16 or fp32)."),
    out: Path = typer.Option(..., "--out", help="Empty folder for the int8 copy."),
    keep: list[str] = typer.Option(
        [], "--keep", help="Also leave these modules unquantised (a name or a re: pattern, e.g. 're:.*o_proj'); "
        "the output layer always is."
    ),
    activations: str = typer.Option(
        "symmetric", "--activations", help="symmetric, or asymmetric (less loss; LoRA adapters cannot apply)."
    ),
    smoothing_alpha: float = typer.Option(
        0.75, "--smoothing-alpha", help="Share of activation outliers moved into the weights (0: no smoothing)."
    ),
    calibration: Path | None = typer.Option(
        None, "--calibration", help="Text for the smoothing scales: JSONL with \"text\", or a text per line "
        "(default: the bundled Korean calibration set)."
    ),
    keep_end_layers: bool = typer.Option(
        False, "--keep-end-layers/--quantize-end-layers", help="Leave the first and last decoder layer unquantised."
    ),
    keep_down_proj: bool = typer.Option(
        False, "--keep-down-proj/--quantize-down-proj", help="Leave the MLP down_proj layers unquantised (with "
        "--keep-end-layers: +0.2% perplexity on the demo instead of +2.2%, and no faster than bf16)."
    ),
) -> None:
    """Write an int8 (W8A8, compressed-tensors) copy of a model for vLLM's CPU int8 kernels, smoothed on Korean
    calibration text; print its folder. LoRA adapters of the original model are rewritten for it when served."""
    from serving.quantize import Int8Settings, quantize_int8

    settings = Int8Settings(source=str(model), activations=activations, smoothing_alpha=smoothing_alpha,
                            keep_end_layers=keep_end_layers, keep_down_proj=keep_down_proj)
    if calibration is not None:
        settings.calibration = str(calibration)
    typer.echo(str(quantize_int8(model, out, keep, settings)))


__all__ = ["SERVE_CONTEXT", "keys_app", "model_demo", "model_int8", "serve"]
