"""``nexus-k audit``: check the audit log's hash chain, sign checkpoints, purge past retention, export, report."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from nexus_k.core.errors import UserError
from serving.keys_cli import DatabaseOption

app = typer.Typer(no_args_is_help=True)


def _settings(database_url: str | None):  # type: ignore[no-untyped-def]
    from serving.config import ServerSettings

    settings = ServerSettings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    return settings


def _engine(database_url: str | None):  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import SQLAlchemyError

    from serving.db import get_engine

    url = _settings(database_url).database_url
    try:
        return get_engine(url)
    except SQLAlchemyError as err:
        raise UserError(f"cannot open the audit database ({type(err).__name__}): {str(err).splitlines()[0]}") from err


def _secret(database_url: str | None) -> str:
    secret = _settings(database_url).audit_secret
    if secret is None or not secret.get_secret_value():
        raise UserError("set NEXUS_K_AUDIT_SECRET (the checkpoints' HMAC key; keep it away from the database)")
    return secret.get_secret_value()


@app.command("verify")
def verify(
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Also check a checkpoint file from `nexus-k audit checkpoint` (needs the secret)."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Recompute the hash chain; exit 1 naming the first altered, inserted or deleted row."""
    from serving.audit_chain import check_checkpoint, verify_chain

    engine = _engine(database_url)
    report = verify_chain(engine)
    if not report.ok:
        typer.echo(f"audit chain BROKEN at row {report.bad_id}: {report.problem} ({report.rows} rows before it "
                   "are intact)", err=True)
        raise typer.Exit(1)
    if checkpoint is not None:
        try:
            lines = [line for line in checkpoint.read_text(encoding="utf-8").splitlines() if line.strip()]
            data = json.loads(lines[-1])  # the newest, when checkpoints are appended to one file
        except (OSError, ValueError, IndexError) as err:
            raise UserError(f"--checkpoint: cannot read {checkpoint}: {err}") from None
        problem = check_checkpoint(engine, data, _secret(database_url))
        if problem is not None:
            typer.echo(f"audit checkpoint FAILED: {problem}", err=True)
            raise typer.Exit(1)
    legacy = f"; {report.legacy_rows} older rows predate the chain" if report.legacy_rows else ""
    typer.echo(f"audit chain intact: {report.rows} rows, head row {report.last_id}, digest {report.last_digest}"
               f"{legacy}")


@app.command("checkpoint")
def checkpoint(
    out: Path | None = typer.Option(None, "--out", help="Also append the checkpoint (one JSON line) to this file."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Verify the chain, then print an HMAC-signed checkpoint of its head (keep it outside the database)."""
    from serving.audit_chain import make_checkpoint, verify_chain

    secret = _secret(database_url)
    report = verify_chain(_engine(database_url))
    if not report.ok:
        raise UserError(f"the audit chain is broken at row {report.bad_id} ({report.problem}): not signing it")
    line = make_checkpoint(report, secret).to_json()
    if out is not None:
        with out.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
    typer.echo(line)
