"""Loading tokenizers and models (local folders, GGUF files or hub names) and building new Llama models."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from nexus_k.core.errors import UserError
from training.config import ModelConfig

log = logging.getLogger(__name__)


def _split_gguf(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """``dir/model.gguf`` -> (``dir``, {"gguf_file": "model.gguf"}); anything else unchanged."""
    path = Path(name_or_path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file not found: {path}")
        return str(path.parent), {"gguf_file": path.name}
    return name_or_path, {}


def _check_reachable(name_or_path: str) -> None:
    """Fail early for a missing local path; a hub-style name (``org/model``) is left to the hub client."""
    if Path(name_or_path).expanduser().exists():
        return
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise UserError(f"model or tokenizer folder not found: {name_or_path}")


def load_tokenizer(name_or_path: str) -> Any:
    """An HF tokenizer from a folder, a GGUF file or (with hub access allowed) a hub name."""
    from transformers import AutoTokenizer

    _check_reachable(name_or_path)
    where, extra = _split_gguf(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(where, **extra)
    except OSError as err:
        raise UserError(f"cannot load a tokenizer from {name_or_path!r}: {str(err).splitlines()[0]}") from err
    return tok


def load_causal_lm(name_or_path: str, dtype: str = "float32") -> Any:
    """A causal LM from a folder, a GGUF file (dequantised) or a hub name, in ``dtype``."""
    import torch
    from transformers import AutoModelForCausalLM

    _check_reachable(name_or_path)
    where, extra = _split_gguf(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(where, dtype=getattr(torch, dtype), **extra)
    except OSError as err:
        raise UserError(f"cannot load a model from {name_or_path!r}: {str(err).splitlines()[0]}") from err
    log.info("loaded %s (%s, %.1fM parameters)", name_or_path, type(model).__name__, count_parameters(model) / 1e6)
    return model


def padded_vocab_size(tokenizer: Any, multiple: int = 64) -> int:
    """Tokenizer size rounded up so that vocabulary-parallel sharding and kernels divide evenly."""
    return ((len(tokenizer) + multiple - 1) // multiple) * multiple


def build_llama(cfg: ModelConfig, tokenizer: Any) -> Any:
    """A new random-weight ``LlamaForCausalLM`` shaped by ``cfg``, sized for ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    config = LlamaConfig(
        vocab_size=padded_vocab_size(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_word_embeddings,
        initializer_range=cfg.initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=pad,
        dtype="float32",
    )
    return LlamaForCausalLM(config)


def count_parameters(model: Any, trainable_only: bool = False) -> int:
    """Number of (unique) parameters; tied embeddings count once."""
    seen, total = set(), 0
    for param in model.parameters():
        if id(param) in seen or (trainable_only and not param.requires_grad):
            continue
        seen.add(id(param))
        total += param.numel()
    return total


def decoder_layers(model: Any) -> list[Any]:
    """The transformer blocks (what FSDP shards one by one); empty if the layout is unknown."""
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(core, "model", None), "layers", None)
    return list(layers) if layers is not None else []


def save_trained_model(lm: Any, wrapped: Any, tokenizer: Any, out_dir: Path, info: Any) -> Path | None:
    """Write an HF folder (safetensors, config, tokenizer) that vLLM serves; under FSDP the shards are
    gathered into a plain copy first. Every process must call this; only the main one writes."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if info.strategy == "fsdp" and info.distributed:
        full = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if info.is_main:
            # The sharded model's parameters are DTensors: touching them on one rank only would wait forever
            # for the others, so the main process saves a plain copy.
            plain = type(lm)(lm.config)
            plain.load_state_dict({k.removeprefix("lm."): v for k, v in full.items()})
            plain.generation_config = lm.generation_config
            lm = plain
    if not info.is_main:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
