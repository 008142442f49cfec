"""Group commit of what each finished request leaves behind: its credit settlement and its audit row.

Under load many requests end at once; committing each on its own thread made them queue for the database
(SQLite has one writer) and for the connection pool, and the wait showed up as first-token latency of the
requests arriving behind them. One writer thread takes whatever has queued up and commits it in a single
transaction; each request still waits until its own records are durable before its last byte goes out.
The audit rows are hash-chained in that same transaction (``serving.security.audit_chain``): no extra round trip
per request, one lock per batch. The settlements of one organisation in a batch are summed into one update.

On SQLite the writer keeps one connection of its own and runs the batch's fixed statements on its ``sqlite3``
cursor (:class:`~serving.security.audit_chain.SqliteAppender`), inside a SQLAlchemy transaction as before: the
same rows, digests and commit, at about a third of the cost per batch. SQLite runs in WAL mode with
``synchronous=NORMAL`` (``serving.storage.db``): a committed batch survives the process being killed (``kill -9``);
only a power cut or an operating-system crash can lose the last commits (PostgreSQL where that matters).

The hand-off to the writer thread and back costs two thread wake-ups, which on an idle virtual machine (halted
vCPUs) cost more than the commit itself. So on SQLite a request that is the only one in flight, finding the
writer idle, commits right on the event loop's thread (:meth:`RecordWriter.record` with ``alone``): the same
statements and commit, on a second connection of the writer's that never waits for SQLite's write lock (another
replica holding it, or the writer thread: the record goes to the thread instead) and never checkpoints the WAL
(that syncs files to disk; the thread does it every :data:`INLINE_CHECKPOINT_EVERY` such commits). With more than
one request in flight, where blocking the loop would delay the others, everything goes through the thread and
its group commit as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from serving.security.audit import AuditEntry
from serving.security.audit_chain import SQLITE_NAMED, SqliteAppender, append_rows
from serving.security.quota import SETTLE, settle_params

log = logging.getLogger(__name__)

MAX_BATCH = 256
"""Most requests committed in one transaction."""
INLINE_CHECKPOINT_EVERY = 200
"""Commits on the event loop's thread after which the writer thread checkpoints SQLite's WAL (about 1,000 pages,
SQLite's own default interval)."""
_CHECKPOINT = None
"""Queued instead of a job: checkpoint the WAL."""


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
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._sqlite: SqliteAppender | None = None
        """Set on SQLite (the ``sqlite3`` driver): the batch goes through its cursor (see the module's text)."""
        self._conn: Connection | None = None
        """The writer thread's own connection on SQLite (opened again after an error)."""
        self._busy = False
        """The writer thread holds a batch."""
        self._inline: Connection | None = None
        """SQLite: the connection for commits on the event loop's thread (no waiting for the write lock, no
        checkpoints); opened on first use."""
        self._inline_ok = True
        """False once the database turned out not to be in WAL mode (a commit would then sync to disk)."""
        self._inline_commits = 0
        self._inline_lock = threading.Lock()
        """Held during a commit on a caller's thread (two event loops in two threads never share the connection)."""
        if engine.dialect.name == "sqlite" and engine.dialect.driver == "pysqlite":
            self._sqlite = SqliteAppender(engine.dialect)
            compiled = SETTLE.compile(dialect=SQLITE_NAMED)
            self._settle_sql = str(compiled)
            self._settle_fixed = {name: value for name, value in compiled.params.items() if value is not None}
            """The statement's own literals (``coalesce(tokens_leased, 0)``), passed with every row."""

    async def record(self, entry: AuditEntry, settlement: Settlement | None, alone: bool = False) -> None:
        """Return once ``entry`` (and ``settlement``) are committed; raises what the database raised. ``alone``:
        the request is the only one in flight, so on SQLite the commit may run here, on the event loop's thread,
        when the writer thread is idle and the write lock free (see the module's text)."""
        if (alone and self._sqlite is not None and self._inline_ok and not self._busy and self._jobs.empty()
                and self._commit_inline(entry, settlement)):
            return
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

    def _commit_inline(self, entry: AuditEntry, settlement: Settlement | None) -> bool:
        """Commit one record on the calling (event loop's) thread without waiting; False when nothing was
        committed (the write lock was taken, or anything else failed): the writer thread then does it, waiting
        for the lock, and reports a real error."""
        if not self._inline_lock.acquire(blocking=False):
            return False
        conn = self._inline
        try:
            if conn is None or conn.closed or conn.invalidated:
                conn = self._inline = self._open_inline()
                if conn is None:
                    return False
            settlements = [p] if settlement is not None and (p := _settle(settlement)) is not None else []
            self._write_sqlite(conn, settlements, [entry.__dict__])
        except Exception:
            if conn is not None and (conn.closed or conn.invalidated):
                self._inline = None
            return False
        finally:
            self._inline_lock.release()
        self._inline_commits += 1
        if self._inline_commits >= INLINE_CHECKPOINT_EVERY:
            self._inline_commits = 0
            self._start()
            self._jobs.put(_CHECKPOINT)
        return True

    def _open_inline(self) -> Connection | None:
        """The connection for commits on the event loop's thread: its own ``sqlite3`` connection (detached from
        the pool, as its settings differ), which fails at once instead of waiting for SQLite's write lock and
        leaves checkpoints to the writer thread. None (and never again) when the database is not in WAL mode."""
        conn = self.engine.connect()
        conn.detach()  # closed, not pooled, when dropped
        raw = conn.connection.dbapi_connection
        assert raw is not None
        if str(raw.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            self._inline_ok = False
            conn.close()
            return None
        raw.execute("PRAGMA busy_timeout = 0")
        raw.execute("PRAGMA wal_autocheckpoint = 0")
        return conn

    def _checkpoint(self) -> None:
        """Copy the WAL back into the database file (what SQLite's automatic checkpoint would have done)."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:  # the WAL only grows until the next one; reads stay correct
            log.exception("could not checkpoint the security database's WAL")

    def _run(self) -> None:
        while True:
            batch = [self._jobs.get()]
            self._busy = True
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            checkpoint = _CHECKPOINT in batch
            jobs = [job for job in batch if job is not None]
            outcomes = self._commit_jobs(jobs)
            self._busy = False  # before the wake-up: the woken loop may commit its next record itself
            # One wake-up per event loop and batch, not one per request.
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, BaseException | None]]] = {}
            for job, error in zip(jobs, outcomes, strict=True):
                by_loop.setdefault(job.loop, []).append((job.done, error))
            for loop, results in by_loop.items():
                with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody is waiting
                    loop.call_soon_threadsafe(_resolve_all, results)
            if checkpoint:
                self._checkpoint()

    def _commit_jobs(self, jobs: list[_Job]) -> list[BaseException | None]:
        """Commit ``jobs`` in one transaction, or if that fails each alone; what each one's commit raised."""
        if not jobs:
            return []
        try:
            self._commit(jobs)
            return [None] * len(jobs)
        except Exception:
            # One bad record must not lose the others: commit them one by one.
            outcomes: list[BaseException | None] = []
            for job in jobs:
                try:
                    self._commit([job])
                    outcomes.append(None)
                except Exception as err:  # reported to that request's middleware, which logs it
                    outcomes.append(err)
            return outcomes

    def _commit(self, batch: list[_Job]) -> None:
        settlements = _settlements(batch)
        rows = [job.entry.__dict__ for job in batch]
        if self._sqlite is not None:
            self._commit_sqlite(settlements, rows)
            return
        with self.engine.begin() as conn:
            if settlements:
                conn.execute(SETTLE, settlements)
            # Last, so that the chain's lock (held to the commit) covers only the audit rows.
            append_rows(conn, rows)

    def _commit_sqlite(self, settlements: list[dict[str, int]], rows: list[dict]) -> None:
        """The writer thread's SQLite commit, on its own connection."""
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._conn = self.engine.connect()
        try:
            self._write_sqlite(conn, settlements, rows)
        except BaseException:
            # Rolled back; the next batch starts on a fresh connection, whatever state this one is in.
            self._conn = None
            with contextlib.suppress(Exception):
                conn.close()
            raise


    def _write_sqlite(self, conn: Connection, settlements: list[dict[str, int]], rows: list[dict]) -> None:
        """The same transaction as on other databases (settlements, then the chained rows), through the
        ``sqlite3`` cursor of ``conn``."""
        assert self._sqlite is not None
        with conn.begin():
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                if settlements:
                    cursor.executemany(self._settle_sql, [{**self._settle_fixed, **p} for p in settlements])
                self._sqlite.append(cursor, rows)
            finally:
                cursor.close()


def _settle(s: Settlement) -> dict[str, int] | None:
    return settle_params(s.org_id, s.reserved, s.used, s.leased)


def _settlements(batch: list[_Job]) -> list[dict[str, int]]:
    """:data:`~serving.security.quota.SETTLE`'s parameters for a batch: one row per organisation, the sums of its
    requests' settlements (the same totals, one update)."""
    totals: dict[int, dict[str, int]] = {}
    for job in batch:
        s = job.settlement
        if s is None or (params := _settle(s)) is None:
            continue
        total = totals.get(s.org_id)
        if total is None:
            totals[s.org_id] = params
        else:
            for name in ("used", "back", "unlease"):
                total[name] += params[name]
    return list(totals.values())


def _resolve_all(results: list[tuple[asyncio.Future, BaseException | None]]) -> None:
    for future, error in results:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
