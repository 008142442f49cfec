"""The one ``nexus-k`` command. Each area contributes its own typer sub-app; heavy imports stay inside
commands so that ``nexus-k --help`` is instant."""

from __future__ import annotations

import logging
import sys

import typer

from nexus_k import __version__
from nexus_k.core.errors import UserError
from nexus_k.core.settings import apply_offline_policy, get_settings

app = typer.Typer(
    name="nexus-k",
    help="Nexus-K: Korean LLMs on your own machines (tokenizers, training, serving, evaluation).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nexus-k {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print version."),
) -> None:
    """Nexus-K command line."""


def _register() -> None:
    from evals.cli import app as eval_app
    from quantum_kernels.cli import app as quantum_app
    from serving.batch_cli import app as batch_app
    from serving.cli import SERVE_CONTEXT, keys_app, model_demo, model_int8, serve
    from serving.security.audit_cli import app as audit_app
    from tokenizer.cli import app as tokenizer_app
    from training.cli import finetune, model_tiny, train_app

    app.command("serve", context_settings=SERVE_CONTEXT,
                help="Serve a model over an OpenAI-compatible HTTP API (and the chat page).")(serve)
    model_app = typer.Typer(no_args_is_help=True)
    model_app.command("tiny")(model_tiny)
    model_app.command("demo")(model_demo)
    model_app.command("int8")(model_int8)
    app.add_typer(model_app, name="model", help="Build, fetch and convert models.")
    app.add_typer(tokenizer_app, name="tokenizer", help="Train, measure, trim and extend Korean tokenizers.")
    app.add_typer(train_app, name="train", help="Pretrain or chat-tune models.")
    app.command("finetune", help="LoRA fine-tuning on an agency's own chat data.")(finetune)
    app.add_typer(eval_app, name="eval", help="Offline Korean competence and bias evaluation.")
    app.add_typer(quantum_app, name="quantum", help="QUBO / QAOA optimisation (attention-head pruning).")
    app.add_typer(keys_app, name="keys", help="API keys, quotas and audit for the server.")
    app.add_typer(audit_app, name="audit", help="Audit log: verify, checkpoint, purge, export, report.")
    app.add_typer(batch_app, name="batch", help="Batch API input files processed offline, without a server.")


_register()


def main() -> None:
    """Entry point: run the CLI, turning user errors into one line on stderr and exit status 2."""
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    apply_offline_policy(settings)
    try:
        app()
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
