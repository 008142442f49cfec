"""``nexus-k serve`` settings: one model filled by options, ``NEXUS_K_*`` and a YAML file; vLLM's own engine
arguments passed through and checked by vLLM; options an engine cannot honour are errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nexus_k.core.errors import UserError
from serving.cli import _passthrough_args
from serving.config import ServerSettings, resolve_settings
from serving.engines import vllm_available


def test_options_beat_environment_beat_file_beat_defaults(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("port: 9001\nmax_n: 3\nhost: 0.0.0.0\nengine_args:\n  quantization: awq\n  seed: 1\n")
    monkeypatch.setenv("NEXUS_K_MAX_N", "5")
    monkeypatch.setenv("NEXUS_K_PORT", "9002")
    settings = resolve_settings({"port": 9003, "engine_args": {"seed": 2}}, config)
    assert (settings.port, settings.max_n, settings.host) == (9003, 5, "0.0.0.0")
    assert settings.engine_args == {"quantization": "awq", "seed": 2}  # merged key by key, options win
    assert ServerSettings().port == 9002  # the file applies only when asked for


def test_config_file_errors_are_one_line(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("prot: 80\n")
    with pytest.raises(UserError, match=r"unknown setting 'prot'.*did you mean port"):
        resolve_settings({}, config)
    config.write_text("port: [1\n")
    with pytest.raises(UserError, match="not valid YAML"):
        resolve_settings({}, config)
    with pytest.raises(UserError, match="--port: Input should be a valid integer"):
        resolve_settings({"port": "여덟"})


def test_hybrid_weights_cannot_both_be_zero() -> None:
    assert resolve_settings({"model": "m", "hybrid_text_weight": 0}).hybrid_embedding_weight == 1
    with pytest.raises(UserError, match="--hybrid-text-weight and --hybrid-embedding-weight cannot both be 0"):
        resolve_settings({"model": "m", "hybrid_text_weight": 0, "hybrid_embedding_weight": 0})


def test_an_option_the_engine_cannot_honour_is_an_error() -> None:
    with pytest.raises(UserError, match="--kv-cache-gib is a vllm option: the hf engine cannot honour it"):
        resolve_settings({"engine": "hf", "kv_cache_gib": 4.0})
    with pytest.raises(UserError, match="--engine-arg is a vllm option"):
        resolve_settings({"engine": "hf", "engine_args": {"quantization": "awq"}})
    with pytest.raises(UserError, match="--device is a hf option"):
        resolve_settings({"engine": "vllm", "device": "cpu"})


def test_vllm_style_flags_become_typed_engine_arguments() -> None:
    args = _passthrough_args(["--enforce-eager", "--max-num-batched-tokens", "4096", "--kv-cache-dtype=fp8",
                              "--gpu-memory-utilization", "0.8"])
    assert args == {"enforce_eager": True, "max_num_batched_tokens": 4096, "kv_cache_dtype": "fp8",
                    "gpu_memory_utilization": 0.8}
    with pytest.raises(UserError, match="unexpected argument 'stray'"):
        _passthrough_args(["stray"])


def _serve(*args: str):  # type: ignore[no-untyped-def]
    from nexus_k.cli import app

    return CliRunner().invoke(app, ["serve", *args])


def test_serve_cli_rejects_bad_settings_with_a_user_error(tiny_model_dir: Path) -> None:
    """A UserError is what ``nexus-k``'s entry point prints as one ``error:`` line with exit status 2."""
    result = _serve("--engine", "hf", "--model", str(tiny_model_dir), "--kv-cache-gib", "3")
    assert isinstance(result.exception, UserError) and "cannot honour" in str(result.exception)
    result = _serve("--engine", "tpu", "--model", str(tiny_model_dir))
    assert isinstance(result.exception, UserError) and str(result.exception).startswith("--engine: Input should be")
    result = _serve("--model", str(tiny_model_dir), "--lora", "broken")
    assert isinstance(result.exception, UserError) and "--lora takes NAME=VALUE" in str(result.exception)


@pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")
def test_unknown_vllm_argument_names_the_closest_ones(tiny_model_dir: Path) -> None:
    from serving.engines.base import EngineError
    from serving.engines.settings import EngineSettings
    from serving.engines.vllm import check_engine_args, engine_args

    with pytest.raises(EngineError, match=r"--quantizaton is not a vLLM engine argument; did you mean --quantization"):
        check_engine_args({"quantizaton": "awq"})
    with pytest.raises(EngineError, match="use --max-model-len instead"):
        check_engine_args({"max_model_len": 64})
    args = engine_args(EngineSettings(model=str(tiny_model_dir), max_model_len=256,
                                      engine_args={"kv_cache_dtype": "fp8", "enable_prefix_caching": False}))
    assert (args.kv_cache_dtype, args.enable_prefix_caching, args.max_model_len) == ("fp8", False, 256)


def test_chat_template_file_replaces_the_tokenizer_template_on_the_hf_engine(tiny_model_dir: Path,
                                                                             tmp_path: Path) -> None:
    from serving.engines.hf import HFEngine

    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:")

    async def load():  # type: ignore[no-untyped-def]
        engine = await HFEngine.create(str(tiny_model_dir), chat_template=str(template), trust_remote_code=False)
        try:
            return engine.tokenizer.apply_chat_template([{"role": "user", "content": "안녕"}], tokenize=False)
        finally:
            await engine.shutdown()

    assert asyncio.run(load()) == "user: 안녕\nassistant:"
