"""Group commit of what each finished request leaves behind: its credit settlement and its audit row.

Under load many requests end at once; committing each on its own thread made them queue for the database
(SQLite has one writer) and for the connection pool, and the wait showed up as first-token latency of the
requests arriving behind them. One writer thread takes whatever has queued up and commits it in a single
transaction; each request still waits until its own records are durable before its last byte goes out.
The audit rows are hash-chained in that same transaction (``serving.security.audit_chain``): no extra round trip
per request, one lock per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass

from sqlalchemy import Engine

from serving.security.audit import AuditEntry
from serving.security.audit_chain import append_rows
from serving.security.quota import SETTLE, settle_params

log = logging.getLogger(__name__)

MAX_BATCH = 256
"""Most requests committed in one transaction."""


@dataclass
class Settlement:
    """Credits to settle for one request: ``reserved`` tokens held back, ``used`` really spent."""

    org_id: int
    reserved: int
    used: int
    leased: bool = False
    """The reservation came out of this process's credit lease (``serving.security.leases``)."""


@dataclass
class _Job:
    entry: AuditEntry
    settlement: Settlement | None
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future


class RecordWriter:
    """Commits settlements and audit rows from one thread, as many per transaction as have queued up."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def record(self, entry: AuditEntry, settlement: Settlement | None) -> None:
        """Return once ``entry`` (and ``settlement``) are committed; raises what the database raised."""
        loop = asyncio.get_running_loop()
        job = _Job(entry, settlement, loop, loop.create_future())
        self._start()
        self._jobs.put(job)
        await job.done

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="nexus-k-records", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._jobs.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            try:
                self._commit(batch)
                outcomes: list[BaseException | None] = [None] * len(batch)
            except Exception:
                # One bad record must not lose the others: commit them one by one.
                outcomes = []
                for job in batch:
                    try:
                        self._commit([job])
                        outcomes.append(None)
                    except Exception as err:  # reported to that request's middleware, which logs it
                        outcomes.append(err)
            for job, error in zip(batch, outcomes, strict=True):
                with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody is waiting
                    job.loop.call_soon_threadsafe(_resolve, job.done, error)

    def _commit(self, batch: list[_Job]) -> None:
        settlements = [settle_params(s.org_id, s.reserved, s.used, s.leased) for job in batch
                       if (s := job.settlement) is not None]
        with self.engine.begin() as conn:
            if params := [p for p in settlements if p is not None]:
                conn.execute(SETTLE, params)
            # Last, so that the chain's lock (held to the commit) covers only the audit rows.
            append_rows(conn, [dict(job.entry.__dict__) for job in batch])


def _resolve(future: asyncio.Future, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
