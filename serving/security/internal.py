"""Requests the server sends to itself (batch lines): who they run as, carried in the ASGI scope's state.

A client cannot put Python objects into the scope, so only in-process callers (the batch runner) can make a
request run as an organisation without a key; the security layer still meters and audits it like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.security.auth import Principal

INTERNAL_CALL = "nexus_internal_call"
"""The key of an :class:`InternalCall` in the ASGI scope's ``state``."""


@dataclass(frozen=True)
class InternalCall:
    """A batch line's request: the organisation it runs as (None on a server without keys) and its batch."""

    principal: Principal | None
    batch_id: str
