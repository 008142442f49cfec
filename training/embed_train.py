"""``nexus-k train embed``: contrastive training of a sentence-embedding model.

Order of work: read and check every pair (nothing is loaded if a line is bad), mine the missing hard
negatives, score KorSTS-style pairs with the untrained model, train (InfoNCE over in-batch and hard
negatives for retrieval pairs, CoSENT for scored pairs, each batch one kind; optionally at several Matryoshka
widths; LoRA, fresh or continued, or full), score again, and write an ``AutoModel``-loadable folder with its
sentence-transformers pooling files, config and report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from training.embed_config import EmbedConfig
from training.embed_data import Pair, bm25_ranker, embedding_ranker, mine_hard_negatives, read_pairs, read_sts

log = logging.getLogger(__name__)


def _text_key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=7).digest(), "big")


class PairCollate:
    """Pairs -> one batch: queries, then documents (every positive, then every hard negative), and the
    text keys that mark duplicate documents as false negatives."""

    def __init__(self, embedder: Any, hard_negatives: int) -> None:
        self.embedder, self.hard_negatives = embedder, hard_negatives

    def __call__(self, pairs: list[Pair]) -> dict[str, torch.Tensor]:
        """Tokenized queries and documents plus positive / document keys."""
        documents = [p.positive for p in pairs] + [n for p in pairs for n in p.negatives[: self.hard_negatives]]
        q, d = self.embedder.tokenize([p.query for p in pairs]), self.embedder.tokenize(documents)
        return {
            "q_ids": q["input_ids"],
            "q_mask": q["attention_mask"],
            "d_ids": d["input_ids"],
            "d_mask": d["attention_mask"],
            "pos_keys": torch.tensor([_text_key(p.positive) for p in pairs]),
            "doc_keys": torch.tensor([_text_key(t) for t in documents]),
        }


class ScoredCollate:
    """Scored pairs -> one batch: both sentences tokenized, and their gold scores."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def __call__(self, pairs: list[Pair]) -> dict[str, torch.Tensor]:
        """Tokenized first and second sentences plus the float scores."""
        a, b = self.embedder.tokenize([p.query for p in pairs]), self.embedder.tokenize([p.positive for p in pairs])
        return {"a_ids": a["input_ids"], "a_mask": a["attention_mask"], "b_ids": b["input_ids"],
                "b_mask": b["attention_mask"], "scores": torch.tensor([p.score for p in pairs], dtype=torch.float32)}


def mixed_batches(retrieval: list[list[Pair]], scored: list[Pair], batch_size: int, seed: int) -> list[list[Pair]]:
    """The retrieval batches and the scored pairs cut into batches (shuffled; fewer than 2 left out), in one
    seeded random order, so that both kinds are seen throughout training."""
    import random

    rng = random.Random(seed + 1)
    order = list(scored)
    rng.shuffle(order)
    cut = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = list(retrieval) + [b for b in cut if len(b) >= 2]
    rng.shuffle(batches)
    return batches


def length_grouped_batches(pairs: list[Pair], batch_size: int, seed: int, window: int = 16) -> list[list[Pair]]:
    """Shuffled pairs cut into batches of similar positive length: within each window of ``window``
    batches the pairs are sorted by length before cutting (a remainder smaller than 2 pairs is dropped)."""
    import random

    order = list(pairs)
    random.Random(seed).shuffle(order)
    batches = []
    for start in range(0, len(order), batch_size * window):
        chunk = sorted(order[start : start + batch_size * window], key=lambda p: len(p.positive))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [b for b in batches if len(b) >= 2]


def _dims(width: int, cfg: EmbedConfig) -> list[int] | None:
    return [d for d in cfg.matryoshka_dims if d < width] + [width] if cfg.matryoshka_dims else None


def step_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], cfg: EmbedConfig) -> torch.Tensor:
    """The loss of one batch: CoSENT for scored pairs, else InfoNCE."""
    if "scores" not in batch:
        return contrastive_step_loss(model, batch, cfg)
    from training.embed import autocast, cosent_loss

    with autocast(cfg.precision):
        first = model(batch["a_ids"], batch["a_mask"])
        second = model(batch["b_ids"], batch["b_mask"])
    return cosent_loss(first, second, batch["scores"], cfg.cosent_scale, _dims(first.shape[1], cfg))


def contrastive_step_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], cfg: EmbedConfig) -> torch.Tensor:
    """InfoNCE of one batch; documents equal to a query's positive (other than its own column) are masked."""
    from training.embed import autocast, info_nce_loss

    with autocast(cfg.precision):
        queries = model(batch["q_ids"], batch["q_mask"])
        documents = model(batch["d_ids"], batch["d_mask"])
    same = batch["pos_keys"][:, None] == batch["doc_keys"][None, :]
    same[torch.arange(same.shape[0]), torch.arange(same.shape[0])] = False
    return info_nce_loss(queries, documents, cfg.temperature, same, _dims(queries.shape[1], cfg))


def _attach_lora(body: torch.nn.Module, cfg: EmbedConfig) -> tuple[torch.nn.Module, list[str]]:
    """Fresh LoRA adapters, or with ``init_adapter`` that adapter loaded trainable (its targets already in
    ``cfg``: :func:`_take_adapter_shape`)."""
    from training.finetune import attach_lora

    if cfg.init_adapter is None:
        return attach_lora(body, cfg, "FEATURE_EXTRACTION")
    from peft import PeftModel

    return PeftModel.from_pretrained(body, cfg.init_adapter, is_trainable=True), list(cfg.target_modules)


def _take_adapter_shape(cfg: EmbedConfig) -> None:
    """The continued adapter's rank, scaling and targets into ``cfg``, so that the saved config says what was
    trained (not the defaults for fresh adapters)."""
    from nexus_k.core.errors import UserError

    path = Path(cfg.init_adapter or "") / "adapter_config.json"
    if not path.is_file():
        raise UserError(f"--init-adapter {cfg.init_adapter}: no adapter_config.json there")
    adapter = json.loads(path.read_text(encoding="utf-8"))
    cfg.lora_r, cfg.lora_alpha = int(adapter["r"]), int(adapter["lora_alpha"])
    cfg.target_modules = sorted(adapter["target_modules"])


def plot_embed_curve(history: list[dict[str, float]], sts: dict[str, float], path: Path, title: str) -> None:
    """Training loss per step as a PNG; the STS Spearman before and after in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    label = "training loss (InfoNCE, CoSENT on scored batches)"
    if sts:
        label += f" (STS Spearman {sts.get('before', float('nan')):.3f} -> {sts.get('after', float('nan')):.3f})"
    ax.plot([r["step"] for r in history], [r["loss"] for r in history], lw=1.2, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("contrastive loss (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_embed_card(out: Path, cfg: EmbedConfig, report: dict[str, Any]) -> None:
    """README.md: what the folder is, how to load it, and the headline numbers."""
    s = report["summary"]
    sts = ""
    if s["sts_spearman_after"] is not None:
        sts = f"STS Spearman ({s['sts_pairs']} pairs of `{s['sts_file']}`): {s['sts_spearman_before']:.4f} before, "
        sts += f"{s['sts_spearman_after']:.4f} after training.\n"
    kind = "a LoRA adapter (peft) on" if cfg.lora else "fine-tuned weights of"
    continued = f", continuing the adapter `{cfg.init_adapter}`" if cfg.init_adapter else ""
    text = f"""---
base_model: {cfg.base}
library_name: {"peft" if cfg.lora else "transformers"}
pipeline_tag: sentence-similarity
language: [ko]
tags: [nexus-k, sentence-transformers, feature-extraction]
---

# Sentence-embedding model trained with `nexus-k train embed`

This folder holds {kind} `{cfg.base}`, {cfg.pooling} pooling{", normalised" if cfg.normalize else ""}
(`modules.json`, `1_Pooling/config.json`), trained with InfoNCE on {report["data"]["pairs"]} pairs
({report["data"]["mined_negatives"]} hard negatives mined with {cfg.mine}) and CoSENT on
{report["data"]["scored_pairs"]} scored pairs for {s["steps"]} steps{continued}.
Matryoshka widths: {", ".join(map(str, cfg.matryoshka_dims)) or "none"}.

{sts}
Training loss {s["first_loss"]:.4f} at the first step, {s["final_loss"]:.4f} at the last (`loss_curve.png`,
`training_report.json`); the resolved config is `embed_config.json`.

## Use

```python
from sentence_transformers import SentenceTransformer   # or transformers.AutoModel + the pooling above
model = SentenceTransformer("{out}")
vectors = model.encode(["문장 하나", "문장 둘"])
```
"""
    (out / "README.md").write_text(text, encoding="utf-8")


def run_embed(cfg: EmbedConfig) -> dict[str, Any]:
    """Run the whole training and write the artifacts into ``cfg.out``; returns the report."""
    from training.batches import IndexedBatchSource
    from training.config import OptimConfig, save_config
    from training.distributed import DistInfo
    from training.embed import Embedder, EmbeddingModel, load_body, load_embed_tokenizer
    from training.embed_data import sts_spearman
    from training.embed_pooling import PoolingSpec, write_pooling_files
    from training.loop import build_optimizer, build_scheduler
    from training.model import count_parameters

    pairs = read_pairs(cfg.data)  # fails fast, before any model is loaded
    scored = [p for p in pairs if p.score is not None]
    retrieval = [p for p in pairs if p.score is None]
    sts = read_sts(cfg.eval_sts, cfg.eval_sts_max) if cfg.eval_sts else None
    started = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.init_adapter is not None:
        _take_adapter_shape(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out, "embed_config")

    tokenizer = load_embed_tokenizer(cfg.base)
    body = load_body(cfg.base)
    embedder = Embedder(EmbeddingModel(body, cfg.pooling, cfg.normalize), tokenizer, cfg.max_length, cfg.precision)

    targets: list[str] = []  # adapters first: with --init-adapter, mining and "before" see that adapter
    if cfg.gradient_checkpointing:
        body.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora:
        body, targets = _attach_lora(body, cfg)
        embedder.model.body = body

    given = sum(len(p.negatives) for p in pairs)
    mined = 0
    if retrieval and cfg.hard_negatives and cfg.mine != "none":
        ranker = bm25_ranker if cfg.mine == "bm25" else embedding_ranker(embedder.encode)
        mined = mine_hard_negatives(
            retrieval, cfg.hard_negatives, ranker, cfg.mine_rank_from, cfg.mine_rank_to, cfg.seed
        )
        log.info("mined %d hard negatives with %s", mined, cfg.mine)

    report_sts: dict[str, float] = {}
    if sts is not None:
        report_sts["before"] = sts_spearman(sts, embedder.encode)
        log.info("STS Spearman before training: %.4f", report_sts["before"])

    model = embedder.model
    trainable, total = count_parameters(model, trainable_only=True), count_parameters(model)
    log.info("training %.2fM of %.1fM parameters", trainable / 1e6, total / 1e6)

    info = DistInfo()
    collate, collate_scored = PairCollate(embedder, cfg.hard_negatives), ScoredCollate(embedder)
    if cfg.group_by_length or scored:
        grouped = length_grouped_batches(retrieval, cfg.batch_size, cfg.seed) if cfg.group_by_length else [
            retrieval[i : i + cfg.batch_size] for i in range(0, len(retrieval), cfg.batch_size)]
        batches = mixed_batches([b for b in grouped if len(b) >= 2], scored, cfg.batch_size, cfg.seed)
        if not batches:
            from nexus_k.core.errors import UserError

            raise UserError(f"{cfg.data}: too few pairs for one batch of two")
        source = IndexedBatchSource(
            batches, lambda items: (collate_scored if items[0][0].score is not None else collate)(items[0]), 1, 1,
            info, cfg.seed)
    else:
        source = IndexedBatchSource(pairs, collate, cfg.batch_size, 1, info, cfg.seed)
    steps = cfg.max_steps or source.steps_for_epochs(cfg.epochs)
    optim = OptimConfig(
        lr=cfg.lr, warmup_steps=round(cfg.warmup_ratio * steps), weight_decay=cfg.weight_decay, min_lr_ratio=0.0
    )
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, steps)
    history: list[dict[str, float]] = []
    model.train()
    train_started, step, stopped_early = time.perf_counter(), 0, False
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]embed"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}")]
    with Progress(*columns, TimeRemainingColumn()) as progress:
        task = progress.add_task("embed", total=steps, loss="-")
        while step < steps:
            (batch,) = source.micro_batches(step)
            loss = step_loss(model, batch, cfg)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise RuntimeError(f"loss became {value} at step {step}; lower --lr")
            if step % cfg.log_every == 0 or step == steps:
                history.append({"step": step, "loss": value, "lr": scheduler.get_last_lr()[0]})
            progress.update(task, completed=step, loss=f"{value:.4f}")
            if step % 10 == 0:
                log.info("step %d/%d loss %.4f (%.0f s)", step, steps, value, time.perf_counter() - train_started)
            if cfg.time_budget_s is not None and time.perf_counter() - train_started > cfg.time_budget_s:
                stopped_early = step < steps
                break
    train_seconds = time.perf_counter() - train_started
    model.eval()
    if sts is not None:
        report_sts["after"] = sts_spearman(sts, embedder.encode)
        log.info("STS Spearman after training: %.4f", report_sts["after"])

    body.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    width = int(embedder.encode(["가"]).shape[1])
    dims = [d for d in cfg.matryoshka_dims if d < width]
    spec = PoolingSpec(cfg.pooling, cfg.normalize, width, cfg.max_seq_length, dims)
    write_pooling_files(out, spec, {"base": cfg.base, "lora": cfg.lora})
    plot_embed_curve(history, report_sts, out / "loss_curve.png", f"{'LoRA' if cfg.lora else 'full'} on {cfg.base}")
    report = {
        "summary": {
            "steps": step,
            "planned_steps": steps,
            "stopped_early": stopped_early,
            "first_loss": history[0]["loss"] if history else None,
            "final_loss": history[-1]["loss"] if history else None,
            "sts_spearman_before": report_sts.get("before"),
            "sts_spearman_after": report_sts.get("after"),
            "sts_pairs": len(sts.scores) if sts else 0,
            "sts_file": cfg.eval_sts,
            "train_seconds": round(train_seconds, 1),
        },
        "data": {
            "pairs": len(retrieval),
            "scored_pairs": len(scored),
            "given_negatives": given,
            "mined_negatives": mined,
            "mined_with": cfg.mine,
        },
        "settings": {
            **{k: v for k, v in asdict(cfg).items() if k not in ("data", "out")},
            "target_modules": targets,
            "trainable_parameters": trainable,
            "total_parameters": total,
            "embedding_dimension": width,
        },
        "wall_seconds": round(time.time() - started, 1),
        "history": history,
    }
    (out / "training_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    write_embed_card(out, cfg, report)
    log.info("embedding model written to %s", out)
    return report
