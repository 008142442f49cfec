"""The training loop shared by pretraining, chat fine-tuning and LoRA: gradient accumulation, bf16
autocast, AdamW with warm-up and cosine decay, exact token-mean loss across micro-batches and processes,
held-out loss and bits per character, checkpoints and resume, a rich progress bar with tokens/s."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from training.config import LoopConfig, OptimConfig
from training.distributed import DistInfo, all_reduce_sum, any_true, gradient_sync, wrap_model

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


class BatchSource(Protocol):
    """Training batches, addressed by optimizer step so that a resumed run sees the same data."""

    def micro_batches(self, step: int) -> list[Batch]:
        """This process's micro-batches (``input_ids``, ``labels``, optional ``attention_mask``)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Position to save in a checkpoint."""
        ...

    def load_state_dict(self, state: dict[str, Any], step: int) -> None:
        """Continue from a saved position (the next call asks for ``step``)."""
        ...


@dataclass
class EvalSet:
    """Held-out batches and the characters of text they cover (for bits per character)."""

    batches: list[Batch]
    """Micro-batches with ``input_ids`` and ``labels``."""
    characters: int = 0
    """Characters of the held-out text (0: bits/char is not reported)."""


@dataclass
class TrainResult:
    """What a run did: history for the plots and metrics JSON, and where it stopped."""

    step: int = 0
    """Optimizer steps completed."""
    tokens: int = 0
    """Input tokens processed (all processes)."""
    train_seconds: float = 0.0
    """Time spent in training steps (not evaluation or saving), summed over resumed runs."""
    history: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {"train": [], "eval": []})
    """``train``: step, loss, lr, tokens_per_s; ``eval``: step, loss, bits_per_char, perplexity."""
    stopped_early: bool = False
    """True when the time budget ended the run before max_steps."""


class CausalLMLoss(nn.Module):
    """Sum of next-token negative log-likelihood over labelled positions, and their count.

    The output projection runs only on labelled positions, which saves most of the logits' memory and
    time when the loss covers a fraction of the tokens (assistant turns) or the vocabulary is large.
    """

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm
        core = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        # A plain tuple, not attributes: registering them as submodules would list every weight twice.
        self._parts = (core.base_model, core.get_output_embeddings())
        self._softcap = getattr(core.config, "final_logit_softcapping", None)

    def forward(
        self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (summed NLL, number of predicted tokens) for one micro-batch."""
        body, head = self._parts
        hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0]
        targets = labels[:, 1:]
        keep = targets != -100
        if bool(keep.all()):
            # Packed pretraining labels every position: a reshape, not a gather (whose backward is a slow
            # scatter on CPU).
            logits, targets = head(hidden[:, :-1]).flatten(0, 1).float(), targets.flatten()
        else:
            logits, targets = head(hidden[:, :-1][keep]).float(), targets[keep]
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        nll = F.cross_entropy(logits, targets, reduction="sum")
        return nll, keep.sum()


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (norm weights, biases and 1-d tensors are exempt)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel (CPU and CUDA) updates all tensors in one pass; sharded (DTensor) parameters keep
    # the default implementation.
    from torch.distributed.tensor import DTensor

    fused = all(not isinstance(p, DTensor) and p.device.type in ("cpu", "cuda") for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused or None)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int) -> Any:
    """Linear warm-up to the peak, then cosine decay to ``min_lr_ratio`` of it at ``max_steps``."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=min(cfg.warmup_steps, max_steps),
        num_training_steps=max_steps,
        min_lr_rate=cfg.min_lr_ratio,
    )


def _autocast(info: DistInfo, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device_type=info.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _tokens_in(batch: Batch) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


@torch.no_grad()
def evaluate(model: nn.Module, eval_set: EvalSet, info: DistInfo, precision: str, max_batches: int = 0) -> dict:
    """Held-out mean token loss, perplexity and bits per character, summed over every process."""
    batches = eval_set.batches[:max_batches] if max_batches else eval_set.batches
    if not batches:
        return {}
    was_training = model.training
    model.eval()
    nll = count = 0.0
    rounds = math.ceil(len(batches) / info.world_size)
    for r in range(rounds):
        idx = r * info.world_size + info.rank
        if idx < len(batches):
            batch = batches[idx]
        else:  # a padding round so every process runs the same number of (FSDP) forwards
            batch = {**batches[0], "labels": torch.full_like(batches[0]["labels"], -100)}
        with _autocast(info, precision):
            s, n = model(**_to_device(batch, info.device))
        nll, count = nll + float(s), count + float(n)
    nll, count = all_reduce_sum([nll, count], info)
    model.train(was_training)
    loss = nll / max(count, 1.0)
    out = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": int(count)}
    if eval_set.characters:
        chars = eval_set.characters * len(batches) / len(eval_set.batches)
        out["bits_per_char"] = nll / math.log(2) / chars
    return out


@contextlib.contextmanager
def _progress(info: DistInfo, total: int, start: int, label: str) -> Iterator[Callable[..., None]]:
    if not info.is_main:
        yield lambda **_: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  {task.fields[tps]} tok/s"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(label, total=total, completed=start, loss="-", tps="-")
        yield lambda **kw: progress.update(task, **kw)


def run_training(
    lm: nn.Module,
    source: BatchSource,
    eval_set: EvalSet | None,
    loop: LoopConfig,
    optim: OptimConfig,
    info: DistInfo,
    checkpoint_dir: Path | None,
    label: str = "train",
    shard_layers: list[nn.Module] | None = None,
) -> tuple[TrainResult, nn.Module]:
    """Train ``lm`` in place for ``loop.max_steps`` optimizer steps (resuming if a checkpoint exists).

    Returns the history and the wrapped loss module (for a last evaluation or FSDP state gathering).
    """
    model = wrap_model(CausalLMLoss(lm).to(info.device), info, shard_layers)
    model.train()
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, loop.max_steps)
    result = TrainResult()
    resume_from = latest_checkpoint(checkpoint_dir) if (checkpoint_dir and loop.resume) else None
    if resume_from is not None:
        result.step, extra = load_checkpoint(resume_from, model, optimizer, scheduler)
        result.tokens, result.train_seconds = extra["tokens"], extra["train_seconds"]
        result.history = extra["history"]
        source.load_state_dict(extra["data"], result.step)

    def checkpoint() -> None:
        if checkpoint_dir is None:
            return
        extra = {
            "tokens": result.tokens,
            "train_seconds": result.train_seconds,
            "history": result.history,
            "data": source.state_dict(),
        }
        save_checkpoint(checkpoint_dir, result.step, model, optimizer, scheduler, extra, info, loop.keep_checkpoints)

    def run_eval() -> None:
        if eval_set is None:
            return
        metrics = evaluate(model, eval_set, info, loop.precision, loop.eval_batches)
        if metrics:
            result.history["eval"].append({"step": result.step, **metrics})
            log.info("step %d held-out %s", result.step, {k: round(v, 4) for k, v in metrics.items()})

    if result.step == 0:
        run_eval()
    started = time.perf_counter()
    window_tokens, window_start = 0, time.perf_counter()
    with _progress(info, loop.max_steps, result.step, label) as update:
        while result.step < loop.max_steps:
            t0 = time.perf_counter()
            micro = [_to_device(b, info.device) for b in source.micro_batches(result.step)]
            local_labels = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)
            local_tokens = sum(_tokens_in(b) for b in micro)
            total_labels, step_tokens = all_reduce_sum([float(local_labels), float(local_tokens)], info)
            scale = info.world_size / max(total_labels, 1.0)
            nll_sum = 0.0
            for i, batch in enumerate(micro):
                with gradient_sync(model, info, enabled=i == len(micro) - 1), _autocast(info, loop.precision):
                    nll, _ = model(**batch)
                    (nll * scale).backward()
                nll_sum += float(nll.detach())
            if optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            (nll_total,) = all_reduce_sum([nll_sum], info)
            loss = nll_total / max(total_labels, 1.0)
            result.step += 1
            result.tokens += int(step_tokens)
            result.train_seconds += time.perf_counter() - t0
            window_tokens += int(step_tokens)
            if result.step % loop.log_every == 0 or result.step == loop.max_steps:
                tps = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                lr = scheduler.get_last_lr()[0]
                result.history["train"].append({"step": result.step, "loss": loss, "lr": lr, "tokens_per_s": tps})
                window_tokens, window_start = 0, time.perf_counter()
                update(completed=result.step, loss=f"{loss:.4f}", tps=f"{tps:,.0f}")
            else:
                update(completed=result.step, loss=f"{loss:.4f}")
            if loop.eval_every and result.step % loop.eval_every == 0 and result.step < loop.max_steps:
                run_eval()
            if loop.checkpoint_every and result.step % loop.checkpoint_every == 0 and result.step < loop.max_steps:
                checkpoint()
            over_budget = loop.time_budget_s is not None and time.perf_counter() - started > loop.time_budget_s
            if any_true(over_budget, info):
                result.stopped_early = result.step < loop.max_steps
                break
    run_eval()
    return result, model
