"""Artifacts written beside a trained model: metrics JSON, the loss-curve PNG and the model card."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from training.loop import TrainResult

log = logging.getLogger(__name__)


def plot_loss_curve(result: TrainResult, path: Path, title: str) -> Path:
    """Training loss (and held-out loss when measured) against optimizer step, as a PNG (skipped, with a
    warning, where matplotlib is not installed)."""
    try:
        import matplotlib
    except ImportError:
        log.warning("no loss curve written: matplotlib is missing (pip install 'nexus-k[plots]')")
        return path

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    train = result.history["train"]
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="training loss", lw=1.4)
    held = result.history["eval"]
    if held:
        ax.plot([r["step"] for r in held], [r["loss"] for r in held], "o-", label="held-out loss", lw=1.4)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def metrics_summary(result: TrainResult) -> dict[str, Any]:
    """The headline numbers of a run."""
    train, held = result.history["train"], result.history["eval"]
    summary: dict[str, Any] = {
        "steps": result.step,
        "tokens": result.tokens,
        "train_seconds": round(result.train_seconds, 2),
        "tokens_per_s": round(result.tokens / result.train_seconds, 1) if result.train_seconds else None,
        "final_train_loss": train[-1]["loss"] if train else None,
        "stopped_early": result.stopped_early,
    }
    if held:
        summary["heldout_loss"] = held[-1]["loss"]
        summary["heldout_perplexity"] = held[-1]["perplexity"]
        if "bits_per_char" in held[-1]:
            summary["heldout_bits_per_char"] = held[-1]["bits_per_char"]
    return summary


def write_metrics(result: TrainResult, path: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the summary and full history as JSON."""
    data = {"summary": metrics_summary(result), **(extra or {}), "history": result.history}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def write_model_card(
    path: Path,
    title: str,
    base: str,
    summary: dict[str, Any],
    data_stats: dict[str, Any],
    settings: dict[str, Any],
    usage: str,
    library: str = "transformers",
) -> Path:
    """A README.md model card with the base model, data statistics, redaction counts and results."""
    redactions = data_stats.get("redactions", {})
    stats_rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in data_stats.items() if k != "redactions")
    red_rows = "\n".join(f"| {k} | {v} |" for k, v in redactions.items())
    result_rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in summary.items())
    setting_rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in settings.items())
    text = f"""---
base_model: {base}
library_name: {library}
language: [ko]
tags: [nexus-k]
---

# {title}

Trained with Nexus-K from `{base}` on the machine that holds the data (nothing was sent anywhere).

## Use

```
{usage}
```

## Data

| statistic | value |
|---|---|
{stats_rows}

Personal data replaced before training (placeholders such as `[PHONE]`):

| kind | count |
|---|---|
{red_rows or "| (redaction off) | - |"}

## Training

| setting | value |
|---|---|
{setting_rows}

## Results

| metric | value |
|---|---|
{result_rows}

![loss curve](loss_curve.png)

## Limits

A small fine-tune inherits the base model's knowledge and its mistakes; check answers before relying on
them, and evaluate on held-out questions from your own domain.
"""
    path.write_text(text, encoding="utf-8")
    return path
