"""The batch runner: an asyncio task beside the server that validates batches, runs their lines and writes
their output files, off the request path.

Each line is a request through the same ASGI app as the online route (``httpx.ASGITransport``), run as the
batch's organisation (:mod:`serving.security.internal`), so validation, credits, the PII guard and the audit row are
those of an online request, marked with the batch id. At most ``batch_concurrency`` lines of this process are
in flight, which keeps interactive requests fast. Lines are claimed in the database, results committed as
each finishes, and claims renewed while they run: after a kill -9 the lines of the dead process go stale and
are claimed again, here after a restart or by another replica.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
from anyio import to_thread
from fastapi import FastAPI

from serving.batch_validate import validate_file
from serving.config import ServerSettings
from serving.security.auth import Principal
from serving.security.internal import INTERNAL_CALL, InternalCall
from serving.storage.batches import BatchLine, BatchRecord, batch_store
from serving.storage.db import Organisation, get_sessionmaker
from serving.storage.files import file_store

log = logging.getLogger(__name__)

POLL_S = 1.0
"""How often an idle runner looks for work other replicas created (its own server wakes it at once)."""


def output_line(batch_id: str, line: BatchLine) -> bytes:
    """One line of an output or error file, in OpenAI's format."""
    digest = hashlib.sha256(f"{batch_id}:{line.line_no}".encode()).hexdigest()[:24]
    item = {"id": f"batch_req_{digest}", "custom_id": line.custom_id, "response": line.response,
            "error": line.error}
    return json.dumps(item, ensure_ascii=False).encode("utf-8") + b"\n"


def line_outcome(status: int, request_id: str | None, body: Any) -> tuple[bool, dict, dict | None]:
    """(succeeded, the response record, the error record) of a line's HTTP answer."""
    response = {"status_code": status, "request_id": request_id, "body": body}
    if 200 <= status < 300:
        return True, response, None
    error = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
    return False, response, {"code": error.get("code") or error.get("type") or f"http_{status}",
                             "message": error.get("message") or f"HTTP {status}"}


async def send_line(app: Any, call: InternalCall, endpoint: str, body: dict) -> tuple[int, str | None, Any]:
    """POST ``body`` to ``endpoint`` through ``app`` in-process as ``call``: (status, request id, JSON body)."""

    async def internal_app(scope: dict, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})[INTERNAL_CALL] = call
        await app(scope, receive, send)

    transport = httpx.ASGITransport(app=internal_app, raise_app_exceptions=False)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://batch.nexus-k", timeout=None) as http:
        answer = await http.post(endpoint, json=body)
    try:
        data: Any = answer.json()
    except ValueError:
        data = {"error": {"message": answer.text[:1000], "type": "server_error"}}
    return answer.status_code, answer.headers.get("x-request-id"), data


def shutting_down(status: int, body: Any) -> bool:
    """Whether an answer is the drain's 503 (the line was not run: run it later)."""
    error = body.get("error") if isinstance(body, dict) else None
    return status == 503 and isinstance(error, dict) and error.get("code") == "server_shutting_down"


class BatchRunner:
    """Runs the batches stored in the server's database, a bounded number of lines at a time."""

    def __init__(self, app: FastAPI, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings
        self.id = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.store = batch_store(settings.database_url)
        self.files = file_store(settings.database_url, settings.data_dir)
        self.sessions = get_sessionmaker(settings.database_url)
        self.stale_s = float(settings.batch_claim_timeout_s)
        self.running: dict[int, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._batches: dict[str, tuple[int | None, str]] = {}
        self.job: asyncio.Task | None = None
        """Validating or finalizing one batch."""
        self.job_batch: str | None = None
        self._last_renew = 0.0

    def wake(self) -> None:
        """Look for work now (a batch was created or cancelled, or a line finished)."""
        self._wake.set()

    def draining(self) -> bool:
        """Whether the server is shutting down (no new lines are started)."""
        return bool(getattr(getattr(self.app.state, "drain", None), "draining", False))

    async def run(self) -> None:
        """Work until cancelled."""
        log.info("batch runner %s: up to %d lines in flight", self.id, self.settings.batch_concurrency)
        while True:
            busy = False
            try:
                busy = await self.step()
            except Exception:
                log.exception("batch runner step failed")
            if busy and len(self.running) < self.settings.batch_concurrency:
                continue
            self._wake.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)

    async def step(self) -> bool:
        """Renew claims, start validating or finalizing a batch, start lines; whether anything was started."""
        now = time.monotonic()
        if now - self._last_renew > self.stale_s / 4:
            self._last_renew = now
            await to_thread.run_sync(self.store.renew_lines, self.id, list(self.running))
            if self.job is not None and self.job_batch is not None:
                await to_thread.run_sync(self.store.renew_batch, self.job_batch, self.id)
            await to_thread.run_sync(self.store.expire_due)
        if self.draining():
            return False
        busy = False
        if self.job is None or self.job.done():
            if self.job is not None and not self.job.cancelled() and self.job.exception() is not None:
                log.error("batch %s: validation or output failed (tried again)", self.job_batch,
                          exc_info=self.job.exception())
            self.job = self.job_batch = None
            batch, work = await self.claim_job()
            if work is not None:
                self.job, self.job_batch = asyncio.create_task(work), batch
                self.job.add_done_callback(lambda _: self.wake())
                busy = True
        free = self.settings.batch_concurrency - len(self.running)
        if free > 0:
            lines = await to_thread.run_sync(self.store.claim_lines, self.id, free, self.stale_s)
            for line in lines:
                self.running[line.id] = asyncio.create_task(self.run_line(line))
            busy = busy or bool(lines)
        return busy

    async def claim_job(self) -> tuple[str | None, Coroutine[Any, Any, None] | None]:
        """A batch to validate or to finalize (one at a time, beside the lines, so claims keep being renewed)."""
        batch = await to_thread.run_sync(self.store.claim_batch, self.id, ("validating",), self.stale_s)
        if batch is not None:
            return batch.id, self.validate(batch)
        await to_thread.run_sync(self.store.to_finalize)
        batch = await to_thread.run_sync(self.store.claim_batch, self.id, ("finalizing",), self.stale_s)
        if batch is not None:
            return batch.id, self.finalize(batch, "completed")
        batch = await to_thread.run_sync(self.store.claim_batch, self.id, ("cancelling",), self.stale_s)
        if batch is not None and not await to_thread.run_sync(self.store.lines_running, batch.id, self.stale_s):
            return batch.id, self.finalize(batch, "expired" if batch.expired_at is not None else "cancelled")
        return None, None

    # ------------------------------------------------------------------------------------------ validation

    def _check_model(self, endpoint: str) -> Any:
        state = self.app.state.nexus
        return state.resolve_embedder if endpoint == "/v1/embeddings" else state.resolve_model

    async def validate(self, batch: BatchRecord) -> None:
        """Check the batch's input file; store its lines and start it, or fail it naming each bad line."""
        record = await to_thread.run_sync(self.files.get, batch.input_file_id, batch.org_id)
        if record is None:
            errors = [{"code": "file_not_found", "message": f"Input file {batch.input_file_id} no longer exists.",
                       "param": "input_file_id", "line": None}]
            await to_thread.run_sync(self.store.fail, batch.id, errors)
            return

        def work() -> None:
            self.store.clear_lines(batch.id)  # from a validation that was interrupted
            try:
                total, errors = validate_file(
                    self.files.path(record), batch.endpoint, self._check_model(batch.endpoint),
                    lambda lines: self.store.add_lines(batch.id, lines),
                    lambda: self.store.renew_batch(batch.id, self.id))
            except OSError as err:
                total, errors = 0, [{"code": "input_file_unreadable", "param": "input_file_id", "line": None,
                                     "message": f"Input file {batch.input_file_id} cannot be read: {err.strerror}"}]
            if errors:
                self.store.clear_lines(batch.id)
                self.store.fail(batch.id, errors)
                log.info("batch %s failed validation (%d errors)", batch.id, len(errors))
            else:
                self.store.start(batch.id, self.id, total)
                log.info("batch %s: %d requests", batch.id, total)

        await to_thread.run_sync(work)

    # --------------------------------------------------------------------------------------------- lines

    def _batch_info(self, batch_id: str) -> tuple[int | None, str]:
        if batch_id not in self._batches:
            batch = self.store.get_any(batch_id)
            assert batch is not None
            self._batches[batch_id] = (batch.org_id, batch.endpoint)
        return self._batches[batch_id]

    def _principal(self, org_id: int | None) -> Principal | None:
        """The organisation a batch runs as (limits as they are now; no per-minute limit for batch lines)."""
        if org_id is None:
            return None
        with self.sessions() as s:
            org = s.get(Organisation, org_id)
        if org is None:
            return None
        return Principal(org.id, org.name, "batch", None, org.tokens_remaining is not None, org.pii_guard or "off")

    async def run_line(self, line: BatchLine) -> None:
        """Send one line through the app as its organisation and record the answer."""
        finished = False
        try:
            org_id, endpoint = await to_thread.run_sync(self._batch_info, line.batch_id)
            call = InternalCall(await to_thread.run_sync(self._principal, org_id), line.batch_id)
            status, request_id, body = await send_line(self.app, call, endpoint, line.body)
            if shutting_down(status, body):
                return  # released below: another process (or this one, restarted) runs it
            ok, response, error = line_outcome(status, request_id, body)
            await to_thread.run_sync(self.store.finish_line, line.id, self.id, ok, response, error)
            finished = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("batch %s line %d failed", line.batch_id, line.line_no)
            error = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"[:500]}
            await to_thread.run_sync(self.store.finish_line, line.id, self.id, False, None, error)
            finished = True
        finally:
            self.running.pop(line.id, None)
            if not finished:
                await asyncio.shield(to_thread.run_sync(self.store.release_line, line.id, self.id))
            self.wake()

    # ------------------------------------------------------------------------------------------ finalize

    async def finalize(self, batch: BatchRecord, status: str) -> None:
        """Write the output (and error) file in line order, then the final status, in one transaction."""

        def work() -> None:
            counts = self.store.counts(batch.id)
            written = []
            output_id = error_id = None

            def lines(state: str) -> Iterator[bytes]:
                for n, line in enumerate(self.store.results(batch.id, state)):
                    if n % 1000 == 999:
                        self.store.renew_batch(batch.id, self.id)
                    yield output_line(batch.id, line)

            if counts.get("done"):
                out = self.files.write(batch.org_id, f"{batch.id}_output.jsonl", "batch_output", lines("done"))
                written.append(out)
                output_id = out.id
            if counts.get("failed"):
                err = self.files.write(batch.org_id, f"{batch.id}_error.jsonl", "batch_output", lines("failed"))
                written.append(err)
                error_id = err.id
            if not self.store.complete(batch.id, self.id, status, written, output_id, error_id, counts):
                for record in written:
                    self.files.path(record).unlink(missing_ok=True)
            else:
                log.info("batch %s %s: %s", batch.id, status, counts)

        await to_thread.run_sync(work)

    async def stop(self) -> None:
        """Cancel the lines in flight (their claims are released for a later run)."""
        tasks = list(self.running.values()) + ([self.job] if self.job is not None else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@asynccontextmanager
async def batch_runner(app: FastAPI, settings: ServerSettings):  # type: ignore[no-untyped-def]
    """Run the batch runner (``app.state.batch_runner``) for the app's lifetime, when batches are enabled."""
    if settings.batch_concurrency <= 0:
        yield None
        return
    runner = BatchRunner(app, settings)
    app.state.batch_runner = runner
    task = asyncio.create_task(runner.run(), name="batch-runner")
    try:
        yield runner
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.stop()
