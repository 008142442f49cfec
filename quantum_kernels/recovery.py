"""A short full fine-tune of a pruned model on the calibration text, with the project's training loop.

Pruning removes heads the rest of the network was trained to read; a few optimizer steps on the same text
that chose the heads let the remaining weights adjust. The held-out text is never trained on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class RecoveryConfig:
    """How to fine-tune after pruning."""

    steps: int = 0
    """Optimizer steps (0: no recovery)."""
    lr: float = 5e-5
    """Peak learning rate (AdamW, short warm-up, cosine decay)."""
    batch_size: int = 4
    """Calibration sequences per optimizer step."""
    seed: int = 0
    """Data order."""


def recover(model: torch.nn.Module, sequences: list[torch.Tensor], config: RecoveryConfig) -> dict:
    """Fine-tune ``model`` in place on equal-length calibration sequences; returns the training history."""
    from training.batches import IndexedBatchSource, stack_collate
    from training.config import LoopConfig, OptimConfig
    from training.distributed import DistInfo
    from training.loop import run_training

    if config.steps < 1:
        return {}
    width = max(s.shape[1] for s in sequences)
    items = [s[0] for s in sequences if s.shape[1] == width]
    if not items:
        raise ValueError("no full-length calibration sequence to train on")
    info = DistInfo()
    micro = min(config.batch_size, len(items))
    source = IndexedBatchSource(items, stack_collate, micro, 1, info, config.seed)
    loop = LoopConfig(max_steps=config.steps, micro_batch_size=micro, precision="fp32", seed=config.seed,
                      log_every=1, eval_every=0, checkpoint_every=0, resume=False)
    optim = OptimConfig(lr=config.lr, warmup_steps=max(1, config.steps // 10), weight_decay=0.0,
                        min_lr_ratio=0.1)
    for param in model.parameters():
        param.requires_grad_(True)
    result, _ = run_training(model, source, None, loop, optim, info, None, label="recover")
    for param in model.parameters():
        param.requires_grad_(False)
    model.eval()
    losses = [row["loss"] for row in result.history["train"]]
    log.info("recovery: %d steps, training loss %.4f -> %.4f", result.step, losses[0], losses[-1])
    return {"steps": result.step, "train_seconds": result.train_seconds, "first_loss": losses[0],
            "last_loss": losses[-1], "sequences": len(items)}
