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
from training.config import SftConfig, save_config

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

    from training.batches import IndexedBatchSource, pad_collate
    from training.distributed import barrier
    from training.loop import EvalSet, run_training
    from training.model import count_parameters, decoder_layers, load_causal_lm, load_tokenizer, save_trained_model
    from training.report import metrics_summary, plot_loss_curve, write_metrics, write_model_card

    started = time.time()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out = Path(cfg.output_dir)
    tokenizer = load_tokenizer(cfg.base)
    tokenizer.chat_template = resolve_chat_template(tokenizer)
    train_items, held_items, stats = _encoded_data(cfg, tokenizer)
    torch.manual_seed(cfg.train.seed)
    model = load_causal_lm(cfg.base)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0

    def collate(items: list) -> dict:
        return pad_collate(items, pad_id)

    pairs = [(x.input_ids, x.labels) for x in train_items]
    micro = cfg.train.micro_batch_size
    source = IndexedBatchSource(pairs, collate, micro, cfg.train.grad_accum_steps, info, cfg.train.seed)
    held_pairs = [(x.input_ids, x.labels) for x in held_items]
    eval_set = (
        EvalSet([collate(held_pairs[i : i + micro]) for i in range(0, len(held_pairs), micro)]) if held_pairs else None
    )
    if info.is_main:
        save_config(cfg, out)
    barrier(info)
    layers = decoder_layers(model) if info.strategy == "fsdp" else None
    result, wrapped = run_training(
        model, source, eval_set, cfg.train, cfg.optim, info, out / "checkpoints", "sft", layers
    )
    model_dir = save_trained_model(model, wrapped, tokenizer, out / "model", info)
    summary = metrics_summary(result)
    if info.is_main and model_dir is not None:
        save_config(cfg, model_dir, "nexus_k_train_config")
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
