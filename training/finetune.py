"""``nexus-k finetune``: LoRA fine-tuning on an agency's own chat data, entirely on its own machine.

Order of work: validate every line (nothing is loaded or trained if any line is bad), redact personal
data, tokenize through the model's chat template and check lengths, then train LoRA adapters with the
shared loop and write a vLLM-loadable peft adapter, a model card and a training report.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nexus_k.core.errors import UserError
from training.chat_data import ChatDataStats, encode_all, read_conversations, redact_conversations, split_heldout
from training.config import LoopConfig, OptimConfig, save_config

log = logging.getLogger(__name__)

#: Projection names of Llama/Gemma/Qwen/Mistral-style blocks; vLLM serves LoRA on all of them.
STANDARD_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class FinetuneConfig:
    """Everything ``nexus-k finetune`` needs; the CLI options map one to one onto these fields."""

    base: str
    """Base model: HF folder, ``.gguf`` file or hub name (hub only when NEXUS_K_ALLOW_HUB=1)."""
    data: str
    """Training conversations: JSONL with one ``{"messages": [...]}`` per line (OpenAI format)."""
    out: str
    """Output folder for the adapter, model card, report and loss curve."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int | None = None
    """LoRA scaling numerator (None: twice the rank)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(default_factory=list)
    """Linear layers to adapt (empty: the attention and MLP projections found in the model)."""
    epochs: float = 3.0
    """Passes over the training conversations."""
    max_steps: int | None = None
    """Stop after this many optimizer steps instead of counting epochs."""
    max_length: int = 1024
    """Longest conversation in tokens; longer lines are reported as errors."""
    batch_size: int = 4
    """Conversations per forward pass."""
    grad_accum: int = 2
    """Forward passes per optimizer step."""
    lr: float = 2e-4
    """Peak learning rate."""
    warmup_ratio: float = 0.05
    """Fraction of the steps spent warming up."""
    seed: int = 0
    """Seed for the held-out split, data order and LoRA initialisation."""
    heldout_fraction: float = 0.1
    """Fraction of conversations held out for eval loss (0: none)."""
    eval_every: int = 0
    """Held-out evaluation every this many steps (0: before and after training only)."""
    redact_pii: bool = True
    """Replace personal data before training (counts go into the report)."""
    precision: str = "bf16"
    """``bf16`` autocast or ``fp32``."""
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    keep_checkpoints: bool = False
    """Keep the resumable checkpoints after a successful run."""

    def __post_init__(self) -> None:
        if self.lora_r < 1:
            raise UserError("--lora-r must be at least 1")
        if not 0 <= self.heldout_fraction < 1:
            raise UserError("--heldout-fraction must be in [0, 1)")
        if self.epochs <= 0 and not self.max_steps:
            raise UserError("--epochs must be positive")


def detect_target_modules(model: Any) -> list[str]:
    """The standard attention/MLP projection names present in ``model``, else every non-head Linear."""
    from torch import nn

    linear_names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, nn.Linear)}
    found = [n for n in STANDARD_TARGETS if n in linear_names]
    if found:
        return found
    others = sorted(linear_names - {"lm_head", "embed_out", "output"})
    if not others:
        raise UserError("no linear layers found to adapt; pass --target-modules")
    return others


def attach_lora(model: Any, cfg: Any, task_type: str) -> tuple[Any, list[str]]:
    """``model`` wrapped with fresh LoRA adapters from ``cfg``'s ``lora_r``/``lora_alpha``/``lora_dropout``/
    ``target_modules`` (detected when unset); returns it and the adapted module names."""
    from peft import LoraConfig, get_peft_model

    targets = cfg.target_modules or detect_target_modules(model)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", task_type=task_type)
    return get_peft_model(model, lora), targets


def prepare_data(
    cfg: FinetuneConfig, tokenizer: Any, conversations: list | None = None
) -> tuple[list, list, ChatDataStats]:
    """Validate, redact, encode and split the chat data; raises one UserError listing every bad line."""
    if conversations is None:
        conversations = read_conversations(cfg.data)
    stats = ChatDataStats()
    if cfg.redact_pii:
        redact_conversations(conversations, stats)
    encoded = encode_all(tokenizer, conversations, cfg.max_length, stats, cfg.data)
    train, held = split_heldout(encoded, cfg.heldout_fraction, cfg.seed)
    return train, held, stats


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Run the whole fine-tune and write the artifacts into ``cfg.out``; returns the report."""
    conversations = read_conversations(cfg.data)  # fails fast, before torch or any model is loaded
    import torch

    from training.distributed import DistInfo
    from training.loop import run_training
    from training.model import count_parameters, load_causal_lm, load_tokenizer
    from training.report import metrics_summary, plot_loss_curve, write_model_card
    from training.run import chat_batches

    started = time.time()
    out = Path(cfg.out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tokenizer = load_tokenizer(cfg.base)
    train_items, held_items, stats = prepare_data(cfg, tokenizer, conversations)
    log.info(
        "data: %d training and %d held-out conversations; redactions %s",
        len(train_items),
        len(held_items),
        stats.redactions,
    )

    torch.manual_seed(cfg.seed)
    model, targets = attach_lora(load_causal_lm(cfg.base), cfg, "CAUSAL_LM")
    trainable, total = count_parameters(model, trainable_only=True), count_parameters(model)
    log.info("LoRA r=%d on %s: %.2fM trainable of %.1fM", cfg.lora_r, targets, trainable / 1e6, total / 1e6)

    info = DistInfo()
    source, eval_set = chat_batches(tokenizer, train_items, held_items, cfg.batch_size, cfg.grad_accum, info,
                                    cfg.seed)
    steps = cfg.max_steps or source.steps_for_epochs(cfg.epochs)
    loop = LoopConfig(
        max_steps=steps,
        micro_batch_size=cfg.batch_size,
        grad_accum_steps=cfg.grad_accum,
        precision=cfg.precision,
        seed=cfg.seed,
        log_every=1,
        eval_every=cfg.eval_every,
        eval_batches=0,
        checkpoint_every=max(1, steps // 5),
        keep_checkpoints=1,
        resume=True,
    )
    optim = OptimConfig(lr=cfg.lr, warmup_steps=round(cfg.warmup_ratio * steps), weight_decay=0.0, min_lr_ratio=0.0)

    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out, "finetune_config")
    result, _ = run_training(model, source, eval_set, loop, optim, info, out / "checkpoints", label="finetune")

    model.save_pretrained(out, safe_serialization=True)
    plot_loss_curve(result, out / "loss_curve.png", f"LoRA r={cfg.lora_r} on {Path(cfg.base).name}")
    summary = metrics_summary(result)
    held = result.history["eval"]
    if held:
        summary["heldout_loss_before"] = held[0]["loss"]
    data_stats = {"training_conversations": len(train_items), "heldout_conversations": len(held_items), **asdict(stats)}
    settings = {
        "lora_r": cfg.lora_r,
        "lora_alpha": cfg.lora_alpha or 2 * cfg.lora_r,
        "target_modules": ",".join(targets),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "steps": steps,
        "global_batch": source.global_batch,
        "learning_rate": cfg.lr,
        "max_length": cfg.max_length,
        "precision": cfg.precision,
        "seed": cfg.seed,
    }
    report = {
        "summary": summary,
        "data": data_stats,
        "settings": settings,
        "base": cfg.base,
        "wall_seconds": round(time.time() - started, 1),
        "history": result.history,
    }
    (out / "training_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    usage = (
        f"nexus-k serve --model {cfg.base} --lora {out.name}={out}\n"
        f"# or in Python: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained('{cfg.base}'), '{out}')"
    )
    write_model_card(
        out / "README.md", f"LoRA adapter {out.name}", cfg.base, summary, data_stats, settings, usage, library="peft"
    )
    if not cfg.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    log.info("adapter written to %s", out)
    return report
