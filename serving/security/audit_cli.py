"""``nexus-k audit``: check the audit log's hash chain, sign checkpoints, purge past retention, export, report."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from nexus_k.core.errors import UserError
from serving.security.keys_cli import DatabaseOption

app = typer.Typer(no_args_is_help=True)


def _settings(database_url: str | None):  # type: ignore[no-untyped-def]
    from serving.config import ServerSettings

    settings = ServerSettings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    return settings


def _engine(database_url: str | None):  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import SQLAlchemyError

    from serving.storage.db import get_engine

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
    from serving.security.audit_chain import check_checkpoint, verify_chain

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
    from serving.security.audit_chain import make_checkpoint, verify_chain

    secret = _secret(database_url)
    report = verify_chain(_engine(database_url))
    if not report.ok:
        raise UserError(f"the audit chain is broken at row {report.bad_id} ({report.problem}): not signing it")
    line = make_checkpoint(report, secret).to_json()
    if out is not None:
        with out.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
    typer.echo(line)


def _day(value: str, flag: str):  # type: ignore[no-untyped-def]
    from datetime import date

    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{flag} takes a date as YYYY-MM-DD, got {value!r}") from None


@app.command("purge")
def purge(
    before: str = typer.Option(..., "--before", help="Delete rows written before this UTC day (YYYY-MM-DD)."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Delete old audit rows; refused inside the retention period (NEXUS_K_AUDIT_RETENTION_DAYS, default 730)."""
    from serving.security.audit_admin import purge as purge_rows

    settings = _settings(database_url)
    result = purge_rows(_engine(database_url), _day(before, "--before"), settings.audit_retention_days)
    typer.echo(f"deleted {result.deleted} audit rows written before {before}; the chain now starts after row "
               f"{result.anchor_id}")


@app.command("export")
def export(
    start: str = typer.Option(..., "--from", help="First UTC day (YYYY-MM-DD), included."),
    end: str = typer.Option(..., "--to", help="Last UTC day (YYYY-MM-DD), included."),
    fmt: str = typer.Option("jsonl", "--format", help="csv or jsonl."),
    org: str | None = typer.Option(None, "--org", help="Only this organisation's rows."),
    user: str | None = typer.Option(None, "--user", help="Only this end user's rows."),
    out: Path = typer.Option(..., "--out", help="File to write."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Write the audit rows of a period (every column, digests included) as CSV or JSON lines."""
    from serving.security.audit_admin import export as export_rows

    count = export_rows(_engine(database_url), _day(start, "--from"), _day(end, "--to"), fmt, out, org, user)
    typer.echo(f"wrote {count} audit rows to {out}")


@app.command("report")
def report(
    month: str = typer.Option(..., "--month", help="The month to review, YYYY-MM."),
    out: Path = typer.Option(..., "--out", help="HTML file to write."),
    zone: str = typer.Option("Asia/Seoul", "--tz", help="Time zone for days and working hours."),
    database_url: str | None = DatabaseOption,
) -> None:
    """The monthly access-record review as HTML: per organisation and user, refusals, PII, off-hours activity."""
    from zoneinfo import ZoneInfoNotFoundError

    from serving.security.audit_report import render, review

    try:
        data = review(_engine(database_url), month, zone)
    except ZoneInfoNotFoundError:
        raise UserError(f"--tz: unknown time zone {zone!r}") from None
    out.write_text(render(data), encoding="utf-8")
    typer.echo(f"wrote the {month} review ({sum(t.requests for t in data.orgs.values())} requests, "
               f"{len(data.orgs)} organisations) to {out}")
