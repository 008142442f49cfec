"""``/v1/batches``: create (the input is validated by the runner before anything runs), retrieve, list,
cancel. Every lookup is scoped to the caller's organisation: another organisation's batch answers 404."""

from __future__ import annotations

from typing import Any

from anyio import to_thread

from serving.errors import APIError
from serving.handlers.files import not_found as file_not_found
from serving.handlers.files import store_of
from serving.protocol.batches import Batch, BatchErrors, BatchList, BatchRequestCounts, CreateBatchRequest
from serving.state import ServerState
from serving.storage.batches import BatchRecord, BatchStore, batch_store
from serving.usage import UsageRecord

LIVE = ("in_progress", "finalizing", "cancelling")
"""Statuses whose request counts are read from the lines (they change as lines finish)."""


def batches_of(state: ServerState) -> BatchStore:
    """The server's batch store."""
    return batch_store(state.settings.database_url)


def batch_object(record: BatchRecord, counts: dict[str, int] | None = None) -> Batch:
    """A stored batch as the API shows it (``counts``: live line counts per state)."""
    if counts is not None:
        request_counts = BatchRequestCounts(total=record.total, completed=counts.get("done", 0),
                                            failed=counts.get("failed", 0))
    else:
        request_counts = BatchRequestCounts(total=record.total, completed=record.completed, failed=record.failed)
    fields = ("in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
              "cancelling_at", "cancelled_at")
    return Batch(id=record.id, endpoint=record.endpoint, input_file_id=record.input_file_id,
                 completion_window=record.completion_window, status=record.status,  # type: ignore[arg-type]
                 output_file_id=record.output_file_id, error_file_id=record.error_file_id,
                 created_at=record.created_at, request_counts=request_counts, metadata=record.metadata_,
                 errors=BatchErrors(data=record.errors) if record.errors else None,
                 **{name: getattr(record, name) for name in fields})


def _shown(store: BatchStore, record: BatchRecord) -> Batch:
    return batch_object(record, store.counts(record.id) if record.status in LIVE else None)


def not_found(batch_id: str) -> APIError:
    """404 for a batch that does not exist or belongs to another organisation."""
    return APIError(f"No batch found with id '{batch_id}'.", 404, "invalid_request_error", "batch_id", "not_found")


async def create_batch(state: ServerState, body: CreateBatchRequest, routes: set[str], owner: int | None,
                       usage: UsageRecord, runner: Any) -> Batch:
    """Queue a batch over the caller's ``batch`` file; the runner validates and runs it."""
    usage.start("batches", None, None)
    usage.resources.append(body.input_file_id)
    if body.endpoint not in routes:
        raise APIError(f"This server does not serve {body.endpoint}.", 400, param="endpoint",
                       code="invalid_value")
    record = await to_thread.run_sync(store_of(state).get, body.input_file_id, owner)
    if record is None:
        raise file_not_found(body.input_file_id)
    if record.purpose != "batch":
        raise APIError(f"File {body.input_file_id} has purpose {record.purpose!r}; a batch reads a file uploaded "
                       "with purpose 'batch'.", 400, param="input_file_id", code="invalid_value")
    store = batches_of(state)
    batch = await to_thread.run_sync(store.create, owner, body.endpoint, body.input_file_id, body.metadata)
    usage.resources.append(batch.id)
    if runner is not None:
        runner.wake()
    return batch_object(batch)


async def retrieve_batch(state: ServerState, batch_id: str, owner: int | None, usage: UsageRecord) -> Batch:
    """The caller's batch, with live request counts."""
    usage.start("batches", None, None)
    usage.resources.append(batch_id)
    store = batches_of(state)
    record = await to_thread.run_sync(store.get, batch_id, owner)
    if record is None:
        raise not_found(batch_id)
    return await to_thread.run_sync(_shown, store, record)


async def list_batches(state: ServerState, owner: int | None, limit: int, after: str | None,
                       usage: UsageRecord) -> BatchList:
    """A page of the caller's batches, newest first."""
    usage.start("batches", None, None)
    store = batches_of(state)

    def page() -> tuple[list[Batch], bool]:
        rows, more = store.page(owner, limit, after)
        return [_shown(store, r) for r in rows], more

    data, more = await to_thread.run_sync(page)
    return BatchList(data=data, has_more=more, first_id=data[0].id if data else None,
                     last_id=data[-1].id if data else None)


async def cancel_batch(state: ServerState, batch_id: str, owner: int | None, usage: UsageRecord,
                       runner: Any) -> Batch:
    """Stop the caller's batch: ``cancelling`` now, ``cancelled`` (with what finished) once lines in flight end."""
    usage.start("batches", None, None)
    usage.resources.append(batch_id)
    store = batches_of(state)
    record = await to_thread.run_sync(store.cancel, batch_id, owner)
    if record is None:
        raise not_found(batch_id)
    if runner is not None:
        runner.wake()
    return await to_thread.run_sync(_shown, store, record)
