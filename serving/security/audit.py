"""The audit log: one row per request (organisation, model, tokens, latency, status), and the text of
prompts and replies only when the operator asks for it, with personal data redacted first."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from serving.storage.db import AuditRecord, get_engine, get_sessionmaker

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 20_000
"""Longest prompt or reply kept in one audit row (the rest is cut, marked with an ellipsis)."""


@dataclass
class AuditEntry:
    """What the middleware learned about one request."""

    request_id: str
    method: str
    path: str
    status: int
    latency_ms: float
    org_name: str | None = None
    key_prefix: str | None = None
    model: str | None = None
    adapter: str | None = None
    end_user: str | None = None
    client_ip: str | None = None
    resources: list[str] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_type: str | None = None
    prompt_text: str | None = None
    reply_text: str | None = None
    pii_counts: dict[str, int] | None = field(default=None)
    created_at: datetime | None = None
    """Stamped when the row is committed (set only to write history, e.g. in tests and imports)."""


def redact_pair(prompt: str | None, reply: str | None) -> tuple[str | None, str | None, dict[str, int]]:
    """Prompt and reply with personal data replaced, and how much of each kind was found in both."""
    from nexus_k.core.pii import redact

    totals: dict[str, int] = {}
    out: list[str | None] = []
    for text in (prompt, reply):
        if text is None:
            out.append(None)
            continue
        clean, counts = redact(text)
        for kind, n in counts.items():
            totals[kind] = totals.get(kind, 0) + n
        out.append(clean if len(clean) <= MAX_TEXT_CHARS else clean[:MAX_TEXT_CHARS] + "…")
    return out[0], out[1], totals


class AuditStore:
    """Writes and reads audit rows."""

    def __init__(self, database_url: str) -> None:
        self.engine = get_engine(database_url)
        self.sessions = get_sessionmaker(database_url)

    def recent(self, limit: int = 20, org: str | None = None) -> list[AuditRecord]:
        """The newest rows, newest first."""
        query = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)
        if org is not None:
            query = query.where(AuditRecord.org_name == org)
        with self.sessions() as s:
            return list(s.scalars(query))
