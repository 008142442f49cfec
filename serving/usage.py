"""The typed usage record of one API request: what it used and said, as its handler knows it.

Handlers fill it (model, adapter, exact token counts from the engine, the prompt and reply text when content
audit is on, the end user the request names, the resources it touched); the security layer reserves credits
through it and commits it (credits settled, one audit row). Nothing re-parses request bodies or SSE streams.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Reserver = Callable[[int], Awaitable[None]]


@dataclass
class UsageRecord:
    """One request's usage, filled as it runs (a stream cut short still counts what was generated)."""

    endpoint: str | None = None
    """API family, e.g. ``chat.completions``, ``completions``, ``responses``, ``embeddings``."""
    model: str | None = None
    """The served model name the request asked for."""
    adapter: str | None = None
    """The LoRA adapter that served it (None: the base model)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    """Of ``completion_tokens``, those spent thinking (reasoning models)."""
    end_user: str | None = None
    """The person the request is for (OpenAI's ``user`` / ``safety_identifier``)."""
    batch_id: str | None = None
    """Set when the request is a line of a batch."""
    resources: list[str] = field(default_factory=list)
    """Ids of stored objects the request touched (files, vector stores, responses, batches)."""
    capture_text: bool = False
    """Whether the prompt and reply text are kept for the audit log (the operator's ``audit_content``)."""
    prompt_text: str | None = None
    reply_parts: list[str] = field(default_factory=list)
    error_type: str | None = None
    """The OpenAI error type of a failed request."""
    pii_guard: str = "off"
    """The organisation's live personal-data guard (``off``, ``mask``, ``block``), set by the security layer."""
    pii_counts: dict[str, int] = field(default_factory=dict)
    """Personal data the guard found, per kind (prompt and answer)."""
    reserved: int = 0
    """Credits (tokens) reserved so far; settled against the real usage at the end."""
    reserver: Reserver | None = field(default=None, repr=False)
    """Set by the security layer for metered organisations: takes credits or raises 429."""
    committer: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)
    """Set by the security layer: settles credits and writes the audit row (once)."""

    @property
    def metered(self) -> bool:
        """Whether credits must be reserved before the engine runs."""
        return self.reserver is not None

    async def reserve(self, tokens: int) -> None:
        """Reserve ``tokens`` credits before generating (no-op for unmetered requests)."""
        if self.reserver is not None and tokens > 0:
            await self.reserver(tokens)
            self.reserved += tokens

    async def commit(self) -> None:
        """Make the record durable now (a stream calls this before its final event, so that whatever the
        client saw is on record even if the process dies a moment later); later calls do nothing."""
        if self.committer is not None:
            import anyio

            with anyio.CancelScope(shield=True):
                await self.committer()

    def start(self, endpoint: str, model: str | None, adapter: str | None, end_user: str | None = None) -> None:
        """Name what the request is and who it is for."""
        self.endpoint, self.model, self.adapter = endpoint, model, adapter
        self.end_user = end_user or self.end_user

    def set_prompt(self, text: str | Callable[[], str]) -> None:
        """The prompt as readable text (computed only when content audit is on)."""
        if self.capture_text:
            self.prompt_text = text() if callable(text) else text

    def add_reply(self, text: str) -> None:
        """Append generated text (kept only when content audit is on)."""
        if self.capture_text and text:
            self.reply_parts.append(text)

    @property
    def reply_text(self) -> str | None:
        """The reply as kept for the audit log."""
        return "".join(self.reply_parts) if self.reply_parts else None

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens: what credits are charged."""
        return self.prompt_tokens + self.completion_tokens


def usage_of(state: Any) -> UsageRecord:
    """The request's record (``request.state`` or an ASGI scope's ``state``), created when none exists yet."""
    holder = state if isinstance(state, dict) else getattr(state, "_state", None)
    if isinstance(holder, dict):
        record = holder.get("usage")
        if not isinstance(record, UsageRecord):
            record = holder["usage"] = UsageRecord()
        return record
    record = getattr(state, "usage", None)
    if not isinstance(record, UsageRecord):
        record = UsageRecord()
        state.usage = record
    return record
