"""Typed configuration for pretraining and chat fine-tuning, read from YAML.

Every field has a docstring; ``load_config`` rejects unknown keys with the list of valid ones, and
``save_config`` writes the resolved config (defaults filled in) beside every artifact.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nexus_k.core.errors import UserError

T = TypeVar("T")


@dataclass
class ModelConfig:
    """Shape of a Llama-architecture model trained from scratch."""

    hidden_size: int = 256
    """Width of the residual stream."""
    num_hidden_layers: int = 4
    """Number of transformer blocks."""
    num_attention_heads: int = 4
    """Query heads; hidden_size must divide evenly by it."""
    num_key_value_heads: int = 4
    """Key/value heads (grouped-query attention when fewer than the query heads)."""
    intermediate_size: int = 688
    """Width of the SwiGLU feed-forward layer."""
    max_position_embeddings: int = 2048
    """Longest context the saved model advertises (vLLM's max_model_len)."""
    rope_theta: float = 10000.0
    """RoPE base frequency."""
    tie_word_embeddings: bool = True
    """Share the input embedding with the output projection (saves vocab x hidden parameters)."""
    initializer_range: float = 0.02
    """Standard deviation of the random initial weights."""
    init_from: str | None = None
    """Continue pretraining an existing HF model (folder or hub name) instead of building a new one."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise UserError(
                f"model.hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise UserError("model.num_attention_heads must be a multiple of num_key_value_heads")


@dataclass
class DataConfig:
    """Where the text comes from and how it is cut into training sequences."""

    train: list[str] = field(default_factory=list)
    """Sources: .txt/.gz (one document per non-empty line), .jsonl(.gz), .tsv/.csv(.gz) with a header,
    or ``hf:NAME[:CONFIG]:SPLIT`` for a `datasets` corpus."""
    heldout: list[str] = field(default_factory=list)
    """Held-out sources; when empty, ``heldout_docs`` documents are taken from the training sources."""
    heldout_docs: int = 500
    """Documents set aside for held-out loss and bits per character when ``heldout`` is empty."""
    text_field: str = "text"
    """JSONL key, TSV/CSV column or dataset column that holds the text."""
    seq_len: int = 256
    """Length of each packed training sequence in tokens."""
    streaming: bool = False
    """Read sources lazily (for corpora that don't fit in memory); otherwise tokenize everything once."""
    max_docs: int | None = None
    """Stop after this many training documents (None: use them all)."""
    min_chars: int = 1
    """Skip documents shorter than this many characters."""
    shuffle_buffer: int = 10000
    """Streaming only: documents held in the shuffle buffer."""

    def __post_init__(self) -> None:
        if self.seq_len < 8:
            raise UserError("data.seq_len must be at least 8")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay."""

    lr: float = 1e-3
    """Peak learning rate, reached after the warm-up."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    warmup_steps: int = 100
    """Optimizer steps of linear warm-up from zero."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices (not on norms or biases)."""
    beta1: float = 0.9
    """AdamW first-moment decay."""
    beta2: float = 0.95
    """AdamW second-moment decay."""
    eps: float = 1e-8
    """AdamW denominator epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 turns clipping off)."""


@dataclass
class LoopConfig:
    """Steps, batch shape, precision, evaluation and checkpoint cadence."""

    max_steps: int = 1000
    """Optimizer steps to run."""
    micro_batch_size: int = 8
    """Sequences per forward pass on each process."""
    grad_accum_steps: int = 1
    """Forward/backward passes per optimizer step; global batch = micro x accum x processes."""
    precision: str = "bf16"
    """``bf16`` (autocast; weights and optimizer stay fp32) or ``fp32``."""
    seed: int = 0
    """Seed for initial weights and data order."""
    log_every: int = 10
    """Record training loss, learning rate and tokens/s every this many steps."""
    eval_every: int = 200
    """Held-out evaluation every this many steps (0: only at the end)."""
    eval_batches: int = 20
    """Micro-batches per held-out evaluation (0: the whole held-out set)."""
    checkpoint_every: int = 200
    """Save a resumable checkpoint every this many steps (0: never)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep."""
    resume: bool = True
    """Continue from the newest checkpoint in the output folder when there is one."""
    time_budget_s: float | None = None
    """Stop (after a final evaluation and save) once this many seconds have passed."""
    threads: int | None = None
    """torch intra-op threads (None: torch's default)."""

    def __post_init__(self) -> None:
        if self.precision not in ("bf16", "fp32"):
            raise UserError(f"train.precision must be bf16 or fp32, not {self.precision!r}")
        if self.max_steps < 1 or self.micro_batch_size < 1 or self.grad_accum_steps < 1:
            raise UserError("train.max_steps, micro_batch_size and grad_accum_steps must be positive")


@dataclass
class DistributedConfig:
    """Multi-process training under torchrun."""

    strategy: str = "ddp"
    """``ddp`` (replicate the model) or ``fsdp`` (shard parameters, gradients and optimizer state)."""
    backend: str = "auto"
    """Process-group backend: ``auto`` (nccl on GPU, gloo on CPU), ``gloo`` or ``nccl``."""

    def __post_init__(self) -> None:
        if self.strategy not in ("ddp", "fsdp"):
            raise UserError(f"distributed.strategy must be ddp or fsdp, not {self.strategy!r}")


@dataclass
class PretrainConfig:
    """``nexus-k train pretrain``: a model from scratch on raw Korean text."""

    output_dir: str
    """Where the HF model folder, checkpoints, metrics and plots go."""
    tokenizer: str
    """Tokenizer folder (``nexus-k tokenizer train`` output or any HF tokenizer folder)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Architecture."""
    data: DataConfig = field(default_factory=DataConfig)
    """Corpus and packing."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    train: LoopConfig = field(default_factory=LoopConfig)
    """Loop settings."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """torchrun settings (ignored in a single process)."""


@dataclass
class SftDataConfig:
    """Chat data in OpenAI ``messages`` JSONL."""

    train: str = ""
    """JSONL file, one ``{"messages": [...]}`` object per line."""
    heldout: str | None = None
    """Held-out JSONL; when absent, ``heldout_fraction`` of the training conversations are set aside."""
    heldout_fraction: float = 0.05
    """Fraction of training conversations held out when no held-out file is given (0: none)."""
    max_length: int = 1024
    """Longest conversation in tokens; longer ones are reported as errors (nothing is trained)."""
    redact_pii: bool = True
    """Replace personal data (RRN, phone, e-mail, card, account) before training."""


@dataclass
class SftConfig:
    """``nexus-k train sft``: full chat fine-tuning with loss on assistant tokens only."""

    base: str
    """Model to fine-tune: HF folder or hub name."""
    output_dir: str
    """Where the fine-tuned HF folder, checkpoints, metrics and plots go."""
    data: SftDataConfig = field(default_factory=SftDataConfig)
    """Chat data."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-5, warmup_steps=10, weight_decay=0.0))
    """Optimizer and schedule."""
    train: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=100, micro_batch_size=4))
    """Loop settings."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """torchrun settings (ignored in a single process)."""


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list")
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError as err:
            raise UserError(f"{where}: expected a number, got {value!r}") from err
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str | int | float):
        return str(value)
    if tp in (int, bool, str):
        raise UserError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a (nested) dict, with a clear error for unknown or missing keys."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise UserError(f"{where}: {err}") from err


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"override {item!r} must look like key.sub=value")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
    """Read a YAML config file into ``cls``, applying ``key=value`` overrides first."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping")
    apply_overrides(data, overrides or [])
    return from_dict(cls, data, where=path.name)


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as plain JSON-able data."""
    return dataclasses.asdict(config)


def save_config(config: Any, out_dir: str | Path, name: str = "resolved_config") -> Path:
    """Write the resolved config as YAML and JSON into ``out_dir``; returns the YAML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = config_to_dict(config)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path
