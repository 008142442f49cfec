"""``nexus-k keys``: API keys per organisation, their limits, and the audit log."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)

PiiGuardOption = typer.Option(
    None, "--pii-guard", help="Personal data in prompts and answers: off, mask (replaced before the model sees it "
    "and in answers) or block (400 pii_detected).")
DatabaseOption = typer.Option(
    None, "--database-url", help="SQLAlchemy URL (default: NEXUS_K_DATABASE_URL or the SQLite file in the cache)."
)


def _url(database_url: str | None) -> str:
    if database_url:
        return database_url
    from serving.config import ServerSettings

    return ServerSettings().database_url


def _store(database_url: str | None):  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import SQLAlchemyError

    from nexus_k.core.errors import UserError
    from serving.security.auth import KeyStore

    url = _url(database_url)
    try:
        return KeyStore(url)
    except SQLAlchemyError as err:
        raise UserError(f"cannot open the key database ({type(err).__name__}): {str(err).splitlines()[0]}") from err


@app.command("create")
def create(
    org: str = typer.Option(..., "--org", help="Organisation the key belongs to (created if new)."),
    rpm: int | None = typer.Option(None, "--rpm", help="Requests per minute for the organisation."),
    token_quota: int | None = typer.Option(
        None, "--token-quota", help="Total token credits for the organisation (prompt + completion)."
    ),
    pii_guard: str | None = PiiGuardOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Create a key and print it (this is the only time it is shown)."""
    key = _store(database_url).create(org, rpm=rpm, token_quota=token_quota, pii_guard=pii_guard)
    _record(database_url, f"nexus-k keys create --org {org}{_limits(rpm, token_quota, pii_guard)}: key {key[:12]}…")
    typer.echo(key)
    typer.echo(f"key for {org!r} created; store it now, it cannot be shown again", err=True)


@app.command("update")
def update(
    org: str = typer.Option(..., "--org", help="The organisation to change."),
    rpm: int | None = typer.Option(None, "--rpm", help="Requests per minute."),
    token_quota: int | None = typer.Option(None, "--token-quota", help="Total token credits."),
    pii_guard: str | None = PiiGuardOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Change an organisation's limits or PII guard (its keys stay as they are)."""
    _store(database_url).update(org, rpm=rpm, token_quota=token_quota, pii_guard=pii_guard)
    _record(database_url, f"nexus-k keys update --org {org}{_limits(rpm, token_quota, pii_guard)}")
    typer.echo(f"updated {org!r}")


@app.command("list")
def list_keys(database_url: str | None = DatabaseOption) -> None:
    """Show every key (prefix only), its organisation, limits and credits."""
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "prefix", "organisation", "created (UTC)", "status", "rpm", "quota", "remaining", "used",
                  "PII guard")
    for k in _store(database_url).list():
        table.add_row(
            str(k.id),
            k.prefix + "…",
            k.org,
            k.created_at.strftime("%Y-%m-%d %H:%M"),
            "revoked" if k.revoked_at else "active",
            _num(k.rpm),
            _num(k.token_quota),
            _num(k.tokens_remaining),
            str(k.tokens_used),
            k.pii_guard,
        )
    Console().print(table)


@app.command("revoke")
def revoke(
    key: str = typer.Argument(..., help="The key's visible prefix (as `list` shows it) or its id."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Revoke a key (every server process refuses it within key_version_check_s, 0.25 s by default)."""
    info = _store(database_url).revoke(key.rstrip("…"))
    _record(database_url, f"nexus-k keys revoke: key {info.id} ({info.prefix}…) of {info.org}")
    typer.echo(f"revoked key {info.id} ({info.prefix}…) of {info.org!r}")


@app.command("audit")
def audit(
    limit: int = typer.Option(20, "--limit", min=1, help="How many of the newest rows to show."),
    org: str | None = typer.Option(None, "--org", help="Only this organisation's requests."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Show the newest audit rows."""
    from rich.console import Console
    from rich.table import Table

    from serving.security.audit import AuditStore

    _store(database_url)
    table = Table("time (UTC)", "organisation", "key", "user", "client", "request", "model", "status", "prompt",
                  "completion", "ms")
    for r in AuditStore(_url(database_url)).recent(limit, org):
        table.add_row(
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.org_name or "-",
            r.key_prefix or "-",
            r.end_user or "-",
            r.client_ip or "-",
            f"{r.method} {r.path}",
            r.model or "-",
            str(r.status),
            str(r.prompt_tokens),
            str(r.completion_tokens),
            f"{r.latency_ms:.0f}",
        )
    Console().print(table)


def _limits(rpm: int | None, token_quota: int | None, pii_guard: str | None) -> str:
    given = (("--rpm", rpm), ("--token-quota", token_quota), ("--pii-guard", pii_guard))
    return "".join(f" {flag} {value}" for flag, value in given if value is not None)


def _record(database_url: str | None, action: str) -> None:
    """The administrative change, as a row of the hash-chained audit log (who changed what, when)."""
    from serving.security.audit_admin import record_admin_action
    from serving.storage.db import get_engine

    record_admin_action(get_engine(_url(database_url)), action)


def _num(value: int | None) -> str:
    return "unlimited" if value is None else str(value)
