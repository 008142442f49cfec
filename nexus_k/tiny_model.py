"""Small random-weight Llama models with a Korean BPE tokenizer and a chat template.

Used by tests, benchmarks and demos: everything is built locally, nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

# ChatML with tool support: tools are listed in the system turn, tool calls are JSON in <tool_call> tags
# (the Hermes/Qwen convention, which serving/chat.py parses back into OpenAI tool_calls).
CHATML_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "You may call these functions. Answer with <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>.\n"
    "<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools><|im_end|>\n"
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'system' %}"
    "{% elif message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n"
    "{% for call in message.tool_calls %}<tool_call>{\"name\": \"{{ call.function.name }}\", "
    "\"arguments\": {{ call.function.arguments if call.function.arguments is string "
    "else call.function.arguments | tojson }}}</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif message.role == 'tool' %}<|im_start|>tool\n{{ message.content }}<|im_end|>\n"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]


@dataclass
class TinyModelConfig:
    """Shape of a generated model; presets below."""

    vocab_size: int = 4096
    """Target BPE vocabulary size (the bundled text yields fewer merges for big targets)."""
    hidden_size: int = 128
    """Model width; head_dim = hidden_size / num_attention_heads must be one vLLM's CPU kernels support."""
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    intermediate_size: int = 256
    max_position_embeddings: int = 2048
    seed: int = 0
    """Seed for the random weights: same seed, same model."""


PRESETS: dict[str, TinyModelConfig] = {
    "tiny": TinyModelConfig(),
    "small": TinyModelConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=688),
    # ~100M parameters: the size the serving and eval benchmarks use.
    "100m": TinyModelConfig(vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            num_key_value_heads=12, intermediate_size=2048),
}


def bundled_korean_text() -> str:
    """The public-domain Korean text shipped with the package."""
    return resources.files("nexus_k.data").joinpath("ko_dongbaekkot.txt").read_text(encoding="utf-8")


def build_korean_bpe(vocab_size: int, texts: list[str] | None = None):
    """A byte-level BPE tokenizer (NFC-normalised) trained on ``texts`` or the bundled Korean text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = texts if texts is not None else bundled_korean_text().splitlines()
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


def build_tiny_model(out_dir: str | Path, preset: str = "tiny", config: TinyModelConfig | None = None) -> Path:
    """Write a random-weight Llama model, its tokenizer and chat template to ``out_dir``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if config is None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        config = PRESETS[preset]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    raw = build_korean_bpe(config.vocab_size)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["</s>", "<|im_start|>"],
        model_max_length=config.max_position_embeddings,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(out)

    vocab = len(tokenizer)
    # Round the embedding up so that vocabulary-parallel sharding divides evenly.
    padded_vocab = ((vocab + 63) // 64) * 64
    torch.manual_seed(config.seed)
    model_config = LlamaConfig(
        vocab_size=padded_vocab,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(model_config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("</s>")],
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    (out / "nexus_k_tiny.json").write_text(json.dumps({"preset": preset, **asdict(config)}, indent=2))
    return out
