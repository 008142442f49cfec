"""``nexus-k train pretrain|sft|embed``, ``nexus-k finetune``, ``nexus-k model tiny``: heavy imports stay inside."""

from __future__ import annotations

from pathlib import Path

import typer

train_app = typer.Typer(no_args_is_help=True)

_OVERRIDE_HELP = "Override a config value, e.g. --set train.max_steps=100 (repeatable)."


@train_app.command("pretrain")
def pretrain(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config, e.g. configs/train/ko-small.yaml."),
    overrides: list[str] = typer.Option([], "--set", help=_OVERRIDE_HELP),
) -> None:
    """Pretrain a Llama-architecture model from scratch on Korean text (torchrun for several processes)."""
    from training.config import PretrainConfig, load_config
    from training.pretrain import run_pretrain

    run_pretrain(load_config(PretrainConfig, config, overrides))


@train_app.command("sft")
def sft(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config, e.g. configs/train/sft-chat.yaml."),
    overrides: list[str] = typer.Option([], "--set", help=_OVERRIDE_HELP),
) -> None:
    """Full chat fine-tuning on OpenAI ``messages`` JSONL, loss on assistant tokens only."""
    from training.config import SftConfig, load_config
    from training.sft import run_sft

    run_sft(load_config(SftConfig, config, overrides))


def finetune(
    base: str = typer.Option(..., "--base", help="Base model: HF folder, .gguf file or hub name."),
    data: Path = typer.Option(..., "--data", help='Chat data: JSONL, one {"messages": [...]} per line.'),
    out: Path = typer.Option(..., "--out", help="Output folder for the adapter, model card and report."),
    lora_r: int = typer.Option(16, "--lora-r", help="LoRA rank."),
    lora_alpha: int | None = typer.Option(None, "--lora-alpha", help="LoRA alpha (default: 2 x rank)."),
    lora_dropout: float = typer.Option(0.05, "--lora-dropout", help="Dropout on the LoRA input."),
    target_modules: str = typer.Option(
        "", "--target-modules", help="Comma-separated layer names (default: detected projections)."
    ),
    epochs: float = typer.Option(3.0, "--epochs", help="Passes over the data."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimizer steps (overrides --epochs)."),
    max_length: int = typer.Option(1024, "--max-length", help="Longest conversation in tokens."),
    batch_size: int = typer.Option(4, "--batch-size", help="Conversations per forward pass."),
    grad_accum: int = typer.Option(2, "--grad-accum", help="Forward passes per optimizer step."),
    lr: float = typer.Option(2e-4, "--lr", help="Peak learning rate."),
    warmup_ratio: float = typer.Option(0.05, "--warmup-ratio", help="Fraction of steps warming up."),
    seed: int = typer.Option(0, "--seed", help="Seed for split, order and initialisation."),
    heldout_fraction: float = typer.Option(
        0.1, "--heldout-fraction", help="Fraction held out for eval loss (0: none)."
    ),
    eval_every: int = typer.Option(0, "--eval-every", help="Eval every N steps (0: before and after)."),
    redact_pii: bool = typer.Option(True, "--redact/--no-redact", help="Redact personal data first."),
    precision: str = typer.Option("bf16", "--precision", help="bf16 (autocast) or fp32."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="Keep resumable checkpoints."),
) -> None:
    """LoRA fine-tuning on an agency's own chat data; nothing leaves the machine."""
    from training.finetune import FinetuneConfig, run_finetune

    targets = [t.strip() for t in target_modules.split(",") if t.strip()]
    cfg = FinetuneConfig(
        base=base,
        data=str(data),
        out=str(out),
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=targets,
        epochs=epochs,
        max_steps=max_steps,
        max_length=max_length,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=lr,
        warmup_ratio=warmup_ratio,
        seed=seed,
        heldout_fraction=heldout_fraction,
        eval_every=eval_every,
        redact_pii=redact_pii,
        precision=precision,
        threads=threads,
        keep_checkpoints=keep_checkpoints,
    )
    report = run_finetune(cfg)
    summary = report["summary"]
    held = f", held-out loss {summary['heldout_loss']:.4f}" if "heldout_loss" in summary else ""
    redacted = sum(report["data"]["redactions"].values())
    typer.echo(
        f"adapter written to {out} ({summary['steps']} steps, train loss "
        f"{summary['final_train_loss']:.4f}{held}; {redacted} personal data items redacted)"
    )


@train_app.command("embed")
def embed(
    base: str = typer.Option(..., "--base", help="Base model: HF folder or hub name (loaded with AutoModel)."),
    data: Path = typer.Option(
        ..., "--data", help='Pairs: JSONL, one {"query", "positive", "negatives"?} or {..., "score"} per line.'
    ),
    out: Path = typer.Option(..., "--out", help="Output folder (adapter or weights, pooling config, report)."),
    lora: bool = typer.Option(True, "--lora/--full", help="LoRA adapters, or fine-tune every weight."),
    pooling: str = typer.Option("mean", "--pooling", help="mean, last or cls."),
    matryoshka_dims: str = typer.Option("", "--matryoshka-dims", help="Comma-separated widths, e.g. 64,128,256."),
    temperature: float = typer.Option(0.05, "--temperature", help="InfoNCE temperature."),
    cosent_scale: float = typer.Option(20.0, "--cosent-scale", help="CoSENT scale for scored pairs."),
    init_adapter: str | None = typer.Option(
        None, "--init-adapter", help="Continue training this LoRA adapter folder (same base) instead of a fresh one."
    ),
    hard_negatives: int = typer.Option(1, "--hard-negatives", help="Hard negatives per query (0: in-batch only)."),
    mine: str = typer.Option("bm25", "--mine", help="Mine missing negatives with bm25, base or none."),
    max_length: int = typer.Option(128, "--max-length", help="Tokens kept per text in training."),
    max_seq_length: int = typer.Option(512, "--max-seq-length", help="Tokens per input the saved model declares."),
    batch_size: int = typer.Option(32, "--batch-size", help="Pairs per step (in-batch negatives)."),
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over the pairs."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimizer steps (overrides --epochs)."),
    lr: float = typer.Option(2e-4, "--lr", help="Peak learning rate."),
    lora_r: int = typer.Option(16, "--lora-r", help="LoRA rank."),
    eval_sts: Path | None = typer.Option(None, "--eval-sts", help="KorSTS-format TSV scored before and after."),
    eval_sts_max: int | None = typer.Option(500, "--eval-sts-max", help="At most this many STS pairs."),
    gradient_checkpointing: bool = typer.Option(
        False, "--gradient-checkpointing", help="Recompute activations (less memory, more compute)."
    ),
    time_budget: float | None = typer.Option(None, "--time-budget", help="Stop training after this many seconds."),
    precision: str = typer.Option("bf16", "--precision", help="bf16 (autocast) or fp32."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
    seed: int = typer.Option(0, "--seed", help="Seed for mining, order and initialisation."),
) -> None:
    """Train a sentence-embedding model (InfoNCE with in-batch and mined hard negatives; CoSENT on scored pairs)."""
    from nexus_k.core.errors import UserError
    from training.embed_config import EmbedConfig
    from training.embed_train import run_embed

    try:
        dims = [int(d) for d in matryoshka_dims.split(",") if d.strip()]
    except ValueError as err:
        raise UserError(f"--matryoshka-dims must be comma-separated integers, not {matryoshka_dims!r}") from err
    cfg = EmbedConfig(
        base=base,
        data=str(data),
        out=str(out),
        lora=lora,
        pooling=pooling,
        matryoshka_dims=dims,
        temperature=temperature,
        cosent_scale=cosent_scale,
        init_adapter=init_adapter,
        hard_negatives=hard_negatives,
        mine=mine,
        max_length=max_length,
        max_seq_length=max_seq_length,
        batch_size=batch_size,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        lora_r=lora_r,
        eval_sts=str(eval_sts) if eval_sts else None,
        eval_sts_max=eval_sts_max,
        gradient_checkpointing=gradient_checkpointing,
        time_budget_s=time_budget,
        precision=precision,
        threads=threads,
        seed=seed,
    )
    report = run_embed(cfg)
    summary = report["summary"]
    sts = ""
    if summary["sts_spearman_after"] is not None:
        sts = f", STS Spearman {summary['sts_spearman_before']:.4f} -> {summary['sts_spearman_after']:.4f}"
    typer.echo(
        f"embedding model written to {out} ({summary['steps']} steps, loss {summary['first_loss']:.4f} -> "
        f"{summary['final_loss']:.4f}{sts})"
    )


def model_tiny(
    out_dir: Path = typer.Argument(..., help="Folder to write the model into."),
    preset: str = typer.Option("tiny", "--preset", help="tiny (~1M params), small (~5M) or 100m."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
) -> None:
    """Write a small random-weight Llama model with a Korean BPE tokenizer and a chat template."""
    from dataclasses import replace

    from nexus_k.core.errors import UserError
    from training.tiny_model import PRESETS, build_tiny_model

    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    path = build_tiny_model(out_dir, preset, replace(PRESETS[preset], seed=seed))
    typer.echo(str(path))
