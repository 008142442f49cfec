"""The audit log: one row per request (organisation, model, tokens, latency, status), and the text of
prompts and replies only when the operator asks for it, with personal data redacted first."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Insert, insert, select

from serving.db import AuditRecord, get_engine, get_sessionmaker, utcnow

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
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_type: str | None = None
    prompt_text: str | None = None
    reply_text: str | None = None
    pii_counts: dict[str, int] | None = field(default=None)


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


def audit_insert(entry: AuditEntry) -> Insert:
    """The statement that stores ``entry``, stamped with the current time."""
    return insert(AuditRecord).values(created_at=utcnow(), **entry.__dict__)


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


def _content_text(content: Any) -> str:
    """Text of an OpenAI message ``content`` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def prompt_text(body: Any) -> str | None:
    """The human-readable prompt of a chat or completion request body."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("messages"), list):
        return "\n".join(
            f"{m.get('role', '?')}: {_content_text(m.get('content'))}" for m in body["messages"] if isinstance(m, dict)
        )
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return "\n".join(value)
    return None


class ReplyCollector:
    """Gathers the generated text from a JSON response or an SSE stream, chunk by chunk."""

    def __init__(self, limit: int = MAX_TEXT_CHARS * 4) -> None:
        self.limit = limit
        self.buffer = bytearray()
        self.overflow = False

    def feed(self, chunk: bytes) -> None:
        """Keep the bytes of one body message (up to a bound)."""
        if len(self.buffer) + len(chunk) > self.limit:
            self.overflow = True
            chunk = chunk[: max(0, self.limit - len(self.buffer))]
        self.buffer.extend(chunk)

    def text(self) -> str | None:
        """The reply's text: choices joined, for JSON bodies and ``data:`` streams alike."""
        raw = self.buffer.decode("utf-8", "replace")
        if raw.lstrip().startswith("data:"):
            parts: list[str] = []
            for line in raw.splitlines():
                payload = line[5:].strip() if line.startswith("data:") else ""
                if payload and payload != "[DONE]":
                    parts.extend(_choice_texts(_loads(payload)))
            return "".join(parts)
        texts = _choice_texts(_loads(raw))
        return "\n".join(texts) if texts else None


def _loads(payload: str) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None


def _choice_texts(obj: Any) -> list[str]:
    """Texts of the choices of one response or chunk object."""
    if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
        return []
    texts = []
    for choice in obj["choices"]:
        if not isinstance(choice, dict):
            continue
        for holder in (choice.get("message"), choice.get("delta")):
            if isinstance(holder, dict) and isinstance(holder.get("content"), str):
                texts.append(holder["content"])
        if isinstance(choice.get("text"), str):
            texts.append(choice["text"])
    return texts
