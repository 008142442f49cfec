"""The security middleware (pure ASGI): key check, rate limit, body limits, credits and the audit row.

Pure ASGI rather than a ``BaseHTTPMiddleware`` so that it sees every message: it counts body bytes as they
arrive (413 without holding more than ``max_request_bytes``) and it writes the audit row and settles the
credits *before* it lets the final body message out, so that whatever a client got is on record even if
the process is killed a moment later.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio import to_thread

from serving.audit import AuditEntry, AuditStore, ReplyCollector, prompt_text, redact_pair
from serving.auth import KeyStore, Principal, bearer_token
from serving.errors import APIError
from serving.quota import QuotaStore, reservation_for
from serving.recorder import RecordWriter, Settlement
from serving.security_settings import SecuritySettings

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_OPEN = {ord("["), ord("{")}


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether ``body`` nests arrays/objects deeper than ``limit`` (brackets inside strings ignored)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for match in _JSON_TOKEN.finditer(body):
        token = match.group()
        if len(token) != 1:
            continue  # a string
        if token[0] in _OPEN:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class SecurityMiddleware:
    """Authentication, rate limits, request limits, credits and audit around the whole server."""

    def __init__(self, app: ASGIApp, settings: SecuritySettings) -> None:
        self.app = app
        self.settings = settings
        self.keys = KeyStore(settings.database_url)
        self.quota = QuotaStore(settings.database_url)
        self.audit = AuditStore(settings.database_url)
        self.records = RecordWriter(self.audit.engine)
        self.page_paths = frozenset(settings.page_paths)

    def is_public(self, method: str, path: str) -> bool:
        """``/health`` and the chat page's static files need no key (the page asks the user for one)."""
        if path in self.settings.public_paths:
            return True
        return method in ("GET", "HEAD") and path in self.page_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and await to_thread.run_sync(self.keys.keys_exist):
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http" or self.is_public(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        await _Exchange(self, scope, receive, send).run()


class _Exchange:
    """One HTTP request passing through the middleware."""

    def __init__(self, mw: SecurityMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.mw, self.scope, self.receive, self.send = mw, scope, receive, send
        self.started = time.perf_counter()
        given = _header(scope, b"x-request-id")
        self.request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        self.state: dict[str, Any] = scope.setdefault("state", {})
        self.principal: Principal | None = None
        self.reserved = 0
        self.status = 0
        self.body_json: Any = None
        self.error_type: str | None = None
        self.finished = False
        self.streaming = False
        self.chunks_seen = 0
        self.reply = ReplyCollector() if mw.settings.audit_content else None
        self.body: bytes | None = None
        self.client_gone = False

    async def run(self) -> None:
        refusal = await self.admit()
        if self.client_gone:
            self.status = 499
            await self.finish()
            return
        if refusal is not None:
            await self.refuse(refusal)
            return
        try:
            await self.mw.app(self.scope, self.replay_receive, self.forward)
        except BaseException as exc:
            if not self.finished:
                self.status = 500 if self.status == 0 else 499
                if isinstance(exc, anyio.get_cancelled_exc_class()) and self.server_draining():
                    self.status, self.error_type = 503, "server_shutting_down"  # cut at the end of the grace
                with anyio.CancelScope(shield=True):
                    await self.finish()
            raise
        if not self.finished:
            # The app returned without a final body message: the client went away mid-answer.
            self.status = 499
            with anyio.CancelScope(shield=True):
                await self.finish()

    def server_draining(self) -> bool:
        """Whether the server has begun its SIGTERM drain (``serving.drain``)."""
        drain = getattr(getattr(self.scope.get("app"), "state", None), "drain", None)
        return bool(getattr(drain, "draining", False))

    async def admit(self) -> APIError | None:
        """Run every check before the app sees the request; an error to send back, or None."""
        settings = self.mw.settings
        token = bearer_token(_header(self.scope, b"authorization"))
        if token is not None:
            self.principal = await to_thread.run_sync(self.mw.keys.authenticate, token)
        if self.principal is None and await to_thread.run_sync(self.mw.keys.keys_exist):
            message = "Incorrect API key provided." if token else "Missing API key: send `Authorization: Bearer <key>`."
            return APIError(
                message, 401, "invalid_request_error", None, "invalid_api_key", {"WWW-Authenticate": "Bearer"}
            )
        self.state["principal"] = self.principal
        if self.principal is not None and self.principal.rpm:
            decision = await to_thread.run_sync(self.mw.quota.acquire_rate, self.principal.org_id, self.principal.rpm)
            if not decision.allowed:
                return APIError(
                    f"Rate limit reached for organisation {self.principal.org_name!r}: "
                    f"{self.principal.rpm} requests per minute. Retry after {decision.retry_after_s} s.",
                    429,
                    "requests",
                    None,
                    "rate_limit_exceeded",
                    {"Retry-After": str(decision.retry_after_s)},
                )
        refusal = await self.read_body(settings.max_request_bytes)
        if refusal is not None or self.client_gone:
            return refusal
        if (
            self.principal is not None
            and self.principal.metered
            and self.scope["method"] == "POST"
            and self.scope["path"].startswith("/v1/")
        ):
            return await self.reserve()
        return None

    async def read_body(self, limit: int) -> APIError | None:
        """Take the whole body (at most ``limit`` bytes) and check it is sane UTF-8 JSON of bounded depth."""
        too_big = APIError(
            f"Request body larger than {limit} bytes.", 413, "invalid_request_error", None, "request_too_large"
        )
        length = _header(self.scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return too_big
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_big
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        self.body = b"".join(parts)
        if not self.body:
            return None
        try:
            self.body.decode("utf-8")
        except UnicodeDecodeError as err:
            return APIError(
                f"Request body is not valid UTF-8 (byte {err.start}).",
                400,
                "invalid_request_error",
                None,
                "invalid_utf8",
            )
        depth = self.mw.settings.max_json_depth
        if json_depth_exceeds(self.body, depth):
            return APIError(
                f"JSON nested deeper than {depth} levels.", 400, "invalid_request_error", None, "json_too_deep"
            )
        try:
            self.body_json = json.loads(self.body)
        except ValueError:
            self.body_json = None  # the app answers malformed JSON itself
        return None

    async def reserve(self) -> APIError | None:
        """Reserve the most tokens this request can use from the organisation's credits."""
        assert self.principal is not None
        nexus = getattr(getattr(self.scope.get("app"), "state", None), "nexus", None)
        context = getattr(getattr(nexus, "engine", None), "max_model_len", None) or self.mw.settings.context_tokens
        need = reservation_for(
            self.scope["path"], self.body_json, len(self.body or b""), context, self.mw.settings.max_n
        )
        if await to_thread.run_sync(self.mw.quota.reserve, self.principal.org_id, need):
            self.reserved = need
            return None
        left = await to_thread.run_sync(self.mw.quota.remaining, self.principal.org_id)
        return APIError(
            f"You exceeded your current quota: this request may use up to {need} tokens and organisation "
            f"{self.principal.org_name!r} has {left} left. Lower max_tokens or ask for more credits.",
            429,
            "insufficient_quota",
            None,
            "insufficient_quota",
        )

    async def replay_receive(self) -> Message:
        """The buffered body once, then the real channel (so the app still hears a disconnect)."""
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self.receive()

    async def forward(self, message: Message) -> None:
        """Pass the app's messages on; settle and audit just before the last one (or the ``[DONE]`` event)."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = list(message.get("headers", []))
            names = {k.lower() for k, _ in headers}
            if b"x-request-id" not in names:
                headers.append((b"x-request-id", self.request_id.encode()))
            self.streaming = any(
                k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers
            )
            message = {**message, "headers": headers}
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            if self.streaming:
                self.chunks_seen += chunk.count(b"data:")
            if self.reply is not None:
                self.reply.feed(chunk)
            # Settle at the stream's ``[DONE]`` too: a client may close as soon as it reads it, and the
            # audit row must already be durable by then.
            last = not message.get("more_body", False) or (self.streaming and b"data: [DONE]" in chunk)
            if last and not self.finished:
                if self.status >= 400 and chunk:
                    self.error_type = _error_type(chunk)
                with anyio.CancelScope(shield=True):
                    await self.finish()
        await self.send(message)

    async def refuse(self, error: APIError) -> None:
        """Answer with ``error`` without calling the app (and audit the refusal)."""
        self.status = error.status_code
        self.error_type = error.type
        with anyio.CancelScope(shield=True):
            await self.finish()
        await error.response()(self.scope, self.replay_receive, self.send)

    def usage(self) -> tuple[int, int]:
        """Prompt and completion tokens the route reported (or, for a stream cut short before it did,
        one token per chunk sent)."""
        usage = self.state.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        if not usage and self.streaming:
            completion = self.chunks_seen
        return prompt, completion

    async def finish(self) -> None:
        """Settle the credits and commit the audit row (once)."""
        self.finished = True
        prompt, completion = self.usage()
        principal = self.principal
        entry = AuditEntry(
            request_id=self.request_id,
            method=self.scope["method"],
            path=self.scope["path"][:300],
            status=self.status,
            latency_ms=(time.perf_counter() - self.started) * 1000,
            org_name=principal.org_name if principal else None,
            key_prefix=principal.key_prefix if principal else None,
            model=self.state.get("served_model"),
            prompt_tokens=prompt,
            completion_tokens=completion,
            error_type=self.error_type,
        )
        try:
            if self.reply is not None:
                entry.prompt_text, entry.reply_text, entry.pii_counts = redact_pair(
                    prompt_text(self.body_json), self.reply.text()
                )
            settlement = None
            if self.principal is not None:
                settlement = Settlement(self.principal.org_id, self.reserved, prompt + completion)
            await self.mw.records.record(entry, settlement)
        except Exception:
            log.exception("could not settle or audit request %s", self.request_id)


def _error_type(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return str(error.get("type"))[:64] if isinstance(error, dict) and error.get("type") else None
