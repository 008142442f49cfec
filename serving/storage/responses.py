"""Stored responses (``store: true``) in the server's database, each owned by one organisation.

Every lookup is scoped to the caller's organisation (None when the server runs without keys), so another
organisation's response is indistinguishable from one that does not exist. Rows live in the same database as
keys and audit (SQLite or PostgreSQL), so they survive a restart and are shared by replicas.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from anyio import to_thread
from sqlalchemy import delete, select

from serving.storage.db import StoredResponse, get_sessionmaker, utcnow


@dataclass(frozen=True)
class Stored:
    """One stored response as the API needs it."""

    response: dict[str, Any]
    input_items: list[dict[str, Any]]


def _owned(query: Any, org_id: int | None) -> Any:
    column = StoredResponse.org_id
    return query.where(column.is_(None) if org_id is None else column == org_id)


PURGE_EVERY_S = 3600.0
"""How often a process deletes expired responses (on its next save)."""


class ResponseStore:
    """Save, fetch and delete stored responses (blocking calls run in a worker thread). Responses older than
    ``retention_days`` are gone: invisible at once, deleted by the next save after ``PURGE_EVERY_S``."""

    def __init__(self, database_url: str, retention_days: float = 30) -> None:
        self.sessions = get_sessionmaker(database_url)
        self.retention_days = retention_days
        self._last_purge = float("-inf")

    def _save(self, org_id: int | None, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        with self.sessions.begin() as s:
            s.merge(StoredResponse(id=response["id"], org_id=org_id, response=response, input_items=input_items))
        if time.monotonic() - self._last_purge > PURGE_EVERY_S:
            self._last_purge = time.monotonic()
            self.purge(self.retention_days)

    def _get(self, response_id: str, org_id: int | None) -> Stored | None:
        cutoff = utcnow() - timedelta(days=self.retention_days)
        query = select(StoredResponse).where(StoredResponse.id == response_id, StoredResponse.created_at >= cutoff)
        with self.sessions() as s:
            row = s.scalar(_owned(query, org_id))
        return None if row is None else Stored(row.response, row.input_items)

    def _delete(self, response_id: str, org_id: int | None) -> bool:
        with self.sessions.begin() as s:
            result = s.execute(_owned(delete(StoredResponse).where(StoredResponse.id == response_id), org_id))
        return bool(result.rowcount)

    def purge(self, older_than_days: float) -> int:
        """Delete responses older than ``older_than_days`` days (the retention setting); how many went."""
        cutoff = utcnow() - timedelta(days=older_than_days)
        with self.sessions.begin() as s:
            result = s.execute(delete(StoredResponse).where(StoredResponse.created_at < cutoff))
        return int(result.rowcount or 0)

    async def save(self, org_id: int | None, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        """Store (or replace) ``response`` and the conversation it answered, owned by ``org_id``."""
        await to_thread.run_sync(self._save, org_id, response, input_items)

    async def get(self, response_id: str, org_id: int | None) -> Stored | None:
        """The response if it exists and belongs to ``org_id``."""
        return await to_thread.run_sync(self._get, response_id, org_id)

    async def delete(self, response_id: str, org_id: int | None) -> bool:
        """Delete the response if it exists and belongs to ``org_id``; whether it did."""
        return await to_thread.run_sync(self._delete, response_id, org_id)


@lru_cache(maxsize=8)
def response_store(database_url: str, retention_days: float = 30) -> ResponseStore:
    """The process's store for ``database_url``."""
    return ResponseStore(database_url, retention_days)
