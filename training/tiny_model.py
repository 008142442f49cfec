"""Small random-weight Llama models with a Korean BPE tokenizer and a chat template (``nexus-k model tiny``).

Used by tests, benchmarks and demos: everything is built locally, nothing is downloaded. The tokenizer is
trained by ``nexus-k tokenizer train``'s trainer on the bundled Korean text, the model is built by the same
function pretraining uses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nexus_k.core.korean_text import bundled_korean_path
from training.config import ModelConfig


@dataclass
class TinyModelConfig:
    """Shape of a generated model; presets below."""

    vocab_size: int = 4096
    """Target BPE vocabulary size (the bundled text yields fewer merges for big targets)."""
    model: ModelConfig = field(default_factory=lambda: ModelConfig(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=256))
    """Llama shape; head_dim = hidden_size / num_attention_heads must be one vLLM's CPU kernels support."""
    seed: int = 0
    """Seed for the random weights: same seed, same model."""


PRESETS: dict[str, TinyModelConfig] = {
    "tiny": TinyModelConfig(),
    "small": TinyModelConfig(model=ModelConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                               num_key_value_heads=2, intermediate_size=688)),
    # ~100M parameters: the size the serving and eval benchmarks use.
    "100m": TinyModelConfig(vocab_size=32000, model=ModelConfig(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
        intermediate_size=2048)),
}


def build_tiny_model(out_dir: str | Path, preset: str = "tiny", config: TinyModelConfig | None = None) -> Path:
    """Write a random-weight Llama model, its tokenizer and chat template to ``out_dir``."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig

    from tokenizer.train import TrainConfig, train_tokenizer
    from training.model import build_llama

    if config is None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        config = PRESETS[preset]
    out = Path(out_dir)
    train_tokenizer(TrainConfig(
        corpus=[str(bundled_korean_path())], out=str(out), vocab_size=config.vocab_size, min_frequency=0,
        model_max_length=config.model.max_position_embeddings, show_progress=False,
    ))
    tokenizer = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(config.seed)
    model = build_llama(config.model, tokenizer)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("</s>")],
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    (out / "nexus_k_tiny.json").write_text(json.dumps({"preset": preset, **asdict(config)}, indent=2))
    return out
