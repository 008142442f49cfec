"""``nexus-k train pretrain``: a Llama-architecture model from scratch on Korean text, in one process or
under ``torchrun`` (DDP or FSDP). Writes an HF folder vLLM serves, metrics, a loss curve and a card."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nexus_k.core.errors import UserError
from training.config import PretrainConfig, config_to_dict

if TYPE_CHECKING:
    from training.distributed import DistInfo

log = logging.getLogger(__name__)


def run_pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Train per ``cfg`` (resuming from the newest checkpoint when there is one); returns the metrics."""
    from training.distributed import run_distributed

    return run_distributed(lambda info: _pretrain(cfg, info), cfg.distributed.strategy, cfg.distributed.backend)


def _pretrain(cfg: PretrainConfig, info: DistInfo) -> dict[str, Any]:
    """The run itself, inside the process group (or in a single process)."""
    import torch

    from training.data import build_pretrain_data
    from training.model import build_llama, count_parameters, load_causal_lm, load_tokenizer
    from training.report import plot_loss_curve, write_metrics, write_model_card
    from training.run import train_and_save

    started = time.time()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out = Path(cfg.output_dir)
    tokenizer = load_tokenizer(cfg.tokenizer)
    if tokenizer.eos_token_id is None:
        raise UserError(f"tokenizer {cfg.tokenizer} has no end-of-sequence token to separate documents")
    torch.manual_seed(cfg.train.seed)
    model = load_causal_lm(cfg.model.init_from) if cfg.model.init_from else build_llama(cfg.model, tokenizer)
    if cfg.data.seq_len > model.config.max_position_embeddings:
        raise UserError(f"data.seq_len {cfg.data.seq_len} exceeds the model's max_position_embeddings")
    params = count_parameters(model)
    log.info("model: %.2fM parameters", params / 1e6)
    source, eval_set, data_stats = build_pretrain_data(tokenizer, cfg.data, cfg.train, info)
    result, model_dir, summary = train_and_save(cfg, model, tokenizer, source, eval_set, info, "pretrain")
    if info.is_main and model_dir is not None:
        extra = {
            "parameters": params,
            "world_size": info.world_size,
            "strategy": info.strategy,
            "global_batch_sequences": cfg.train.micro_batch_size * cfg.train.grad_accum_steps * info.world_size,
            "seq_len": cfg.data.seq_len,
            "data": data_stats,
            "wall_seconds": round(time.time() - started, 1),
        }
        write_metrics(result, out / "metrics.json", extra)
        plot_loss_curve(result, out / "loss_curve.png", f"pretraining ({params / 1e6:.1f}M parameters)")
        if (out / "loss_curve.png").is_file():
            (model_dir / "loss_curve.png").write_bytes((out / "loss_curve.png").read_bytes())
        settings = {
            "parameters": params,
            **{f"model.{k}": v for k, v in config_to_dict(cfg.model).items()},
            "seq_len": cfg.data.seq_len,
            "steps": result.step,
            "peak_lr": cfg.optim.lr,
            "processes": info.world_size,
        }
        write_model_card(
            model_dir / "README.md",
            f"Nexus-K pretrained model ({params / 1e6:.1f}M)",
            "(from scratch)" if not cfg.model.init_from else cfg.model.init_from,
            summary,
            {k: v for k, v in data_stats.items() if not isinstance(v, dict)},
            settings,
            f"nexus-k serve --model {model_dir}",
        )
        log.info("model written to %s; %s", model_dir, json.dumps(summary))
    return summary
