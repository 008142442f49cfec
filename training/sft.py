"""``nexus-k train sft``: full chat fine-tuning on OpenAI ``messages`` JSONL, with the loss on assistant
tokens only, through the model's own chat template (ChatML when it has none)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nexus_k.core.chat_templates import resolve_chat_template
from training.chat_data import ChatDataStats, encode_all, read_conversations, redact_conversations, split_heldout
from training.config import SftConfig

if TYPE_CHECKING:
    from training.distributed import DistInfo

log = logging.getLogger(__name__)


def _encoded_data(cfg: SftConfig, tokenizer: Any) -> tuple[list, list, ChatDataStats]:
    stats = ChatDataStats()
    conversations = read_conversations(cfg.data.train)
    if cfg.data.redact_pii:
        redact_conversations(conversations, stats)
    encoded = encode_all(tokenizer, conversations, cfg.data.max_length, stats, cfg.data.train)
    if cfg.data.heldout:
        held_conv = read_conversations(cfg.data.heldout)
        held_stats = ChatDataStats()
        if cfg.data.redact_pii:
            redact_conversations(held_conv, held_stats)
        return encoded, encode_all(tokenizer, held_conv, cfg.data.max_length, held_stats, cfg.data.heldout), stats
    train, held = split_heldout(encoded, cfg.data.heldout_fraction, cfg.train.seed)
    return train, held, stats


def run_sft(cfg: SftConfig) -> dict[str, Any]:
    """Fine-tune ``cfg.base`` on the chat data and write an HF folder with the chat template set."""
    from training.distributed import run_distributed

    return run_distributed(lambda info: _sft(cfg, info), cfg.distributed.strategy, cfg.distributed.backend)


def _sft(cfg: SftConfig, info: DistInfo) -> dict[str, Any]:
    """The run itself, inside the process group (or in a single process)."""
    import torch

    from training.model import count_parameters, load_causal_lm, load_tokenizer
    from training.report import plot_loss_curve, write_metrics, write_model_card
    from training.run import chat_batches, train_and_save

    started = time.time()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out = Path(cfg.output_dir)
    tokenizer = load_tokenizer(cfg.base)
    tokenizer.chat_template = resolve_chat_template(tokenizer)
    train_items, held_items, stats = _encoded_data(cfg, tokenizer)
    torch.manual_seed(cfg.train.seed)
    model = load_causal_lm(cfg.base)
    source, eval_set = chat_batches(tokenizer, train_items, held_items, cfg.train.micro_batch_size,
                                    cfg.train.grad_accum_steps, info, cfg.train.seed)
    result, model_dir, summary = train_and_save(cfg, model, tokenizer, source, eval_set, info, "sft")
    if info.is_main and model_dir is not None:
        data_stats = {
            "training_conversations": len(train_items),
            "heldout_conversations": len(held_items),
            **asdict(stats),
        }
        write_metrics(result, out / "metrics.json", {"data": data_stats, "wall_seconds": time.time() - started})
        plot_loss_curve(result, model_dir / "loss_curve.png", f"chat fine-tuning of {Path(cfg.base).name}")
        settings = {
            "parameters": count_parameters(model),
            "steps": result.step,
            "peak_lr": cfg.optim.lr,
            "max_length": cfg.data.max_length,
            "processes": info.world_size,
        }
        write_model_card(
            model_dir / "README.md",
            f"{Path(cfg.base).name} chat fine-tune",
            cfg.base,
            summary,
            data_stats,
            settings,
            f"nexus-k serve --model {model_dir}",
        )
        log.info("model written to %s; %s", model_dir, json.dumps(summary))
    return summary
