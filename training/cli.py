"""Placeholder sub-app; the area's owner fills in the commands."""

import typer

train_app = typer.Typer(no_args_is_help=True)


def finetune() -> None:
    """LoRA fine-tuning (not yet written)."""
    raise typer.Exit(1)
