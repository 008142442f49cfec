"""The security middleware (pure ASGI): key check, rate limit, body limits, credits and the audit row.

Pure ASGI rather than a ``BaseHTTPMiddleware`` so that it sees every message: it counts body bytes as they
arrive (413 without holding more than ``max_request_bytes``) and it writes the audit row and settles the
credits *before* it lets the final body message out, so that whatever a client got is on record even if
the process is killed a moment later.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import anyio
from anyio import to_thread

from serving.config import ServerSettings
from serving.errors import APIError
from serving.security.audit import AuditEntry, AuditStore, redact_pair
from serving.security.auth import KeyCache, KeyStore, Principal, bearer_token
from serving.security.forwarded import MAX_USER_CHARS, Caller, TrustedProxies
from serving.security.internal import INTERNAL_CALL, InternalCall
from serving.security.leases import CreditLeases, RateSlots
from serving.security.quota import QuotaStore, RateDecision
from serving.security.recorder import RecordWriter, Settlement
from serving.usage import UsageRecord

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

GENERATION_ENDPOINTS = frozenset({"chat.completions", "completions", "responses"})
"""Usage-record endpoints whose answers are AI-generated content (AI Basic Act notice: ``X-AI-Generated``)."""
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


def _too_large(limit: int) -> APIError:
    return APIError(f"Request body larger than {limit} bytes.", 413, "invalid_request_error", None,
                    "request_too_large")


_READ_HEADERS = frozenset({b"x-request-id", b"authorization", b"content-length", b"x-forwarded-for",
                           b"x-forwarded-user", b"x-forwarded-email"})
"""The request headers the middleware reads (each request's headers are scanned once for them)."""


def _read_headers(scope: Scope) -> dict[bytes, str]:
    """The first value of each of :data:`_READ_HEADERS` that the request carries (names compared in lower case)."""
    found: dict[bytes, str] = {}
    for key, value in scope.get("headers", ()):
        key = key.lower()
        if key in _READ_HEADERS and key not in found:
            found[key] = value.decode("latin-1")
    return found


class SecurityMiddleware:
    """Authentication, rate limits, request limits, credits and audit around the whole server."""

    def __init__(self, app: ASGIApp, settings: ServerSettings, page_paths: frozenset[str],
                 clock: Callable[[], float] | None = None) -> None:
        """``clock`` (monotonic seconds, for the key cache): tests drive time with it instead of sleeping."""
        self.app = app
        self.settings = settings
        cache = KeyCache(settings.key_cache_ttl_s, settings.key_version_check_s, clock or time.monotonic)
        self.keys = KeyStore(settings.database_url, cache=cache)
        self.quota = QuotaStore(settings.database_url)
        self.rates = RateSlots(self.quota, settings.rate_batch_fraction)
        self.leases = CreditLeases(self.quota, settings.credit_lease_fraction, settings.credit_lease_idle_s)
        self.audit = AuditStore(settings.database_url)
        self.records = RecordWriter(self.audit.engine)
        self.page_paths = page_paths
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.in_flight = 0
        """Requests inside the middleware now (on the event loop's thread): a request alone may have its record
        committed right on the loop (``RecordWriter.record``)."""

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
        self.in_flight += 1
        try:
            await _Exchange(self, scope, receive, send).run()
        finally:
            self.in_flight -= 1


class _Exchange:
    """One HTTP request passing through the middleware."""

    def __init__(self, mw: SecurityMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.mw, self.scope, self.receive, self.send = mw, scope, receive, send
        self.started = time.perf_counter()
        self.headers = headers = _read_headers(scope)
        given = headers.get(b"x-request-id")
        self.request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        self.state: dict[str, Any] = scope.setdefault("state", {})
        self.principal: Principal | None = None
        self.status = 0
        self.usage = UsageRecord(capture_text=mw.settings.audit_content, committer=self.finish)
        self.state["usage"] = self.usage
        self.finished = False
        self.leased = False
        """Whether this request counts in the organisation's credit lease (``CreditLeases.begin``)."""
        self.body: bytes | None = None
        self.client_gone = False
        self.upload_limit: int | None = None
        """Set for a file upload, whose body streams through (counted) instead of being read whole."""
        self.upload_bytes = 0
        peer = scope.get("client")
        self.caller: Caller = mw.proxies.caller(
            peer[0] if peer else None, headers.get(b"x-forwarded-for"), headers.get(b"x-forwarded-user"),
            headers.get(b"x-forwarded-email"))

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
                    self.status, self.usage.error_type = 503, "server_shutting_down"  # cut at the end of the grace
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
        internal = self.state.get(INTERNAL_CALL)
        if isinstance(internal, InternalCall):
            return await self.admit_internal(internal)
        token = bearer_token(self.headers.get(b"authorization"))
        keys = self.mw.keys
        if token is not None:
            self.principal = keys.cached_key(token) or await to_thread.run_sync(keys.authenticate, token)
        elif self.caller.proxy_user and self.mw.settings.sso_org:
            # A trusted single-sign-on proxy vouches for the person: they act for the configured organisation.
            org = self.mw.settings.sso_org
            self.principal = keys.cached_org(org) or await to_thread.run_sync(keys.principal_for_org, org)
        self.state["caller"] = self.caller
        if self.principal is None and await to_thread.run_sync(self.mw.keys.keys_exist):
            message = "Incorrect API key provided." if token else "Missing API key: send `Authorization: Bearer <key>`."
            return APIError(
                message, 401, "invalid_request_error", None, "invalid_api_key", {"WWW-Authenticate": "Bearer"}
            )
        self.state["principal"] = self.principal
        if self.principal is not None:
            self.usage.pii_guard = self.principal.pii_guard
        if self.principal is not None and self.principal.rpm:
            org_id, rpm = self.principal.org_id, self.principal.rpm
            if self.mw.rates.try_local(org_id, rpm):
                decision = RateDecision(True)
            else:
                decision = await to_thread.run_sync(self.mw.rates.acquire, org_id, rpm)
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
        if self.principal is not None and self.principal.metered:
            self.meter()
        return await self.take_body()

    async def admit_internal(self, call: InternalCall) -> APIError | None:
        """A request the server sends itself (a batch line, see ``serving.security.internal``): it runs as the batch's
        organisation without a key or a per-minute limit; credits, limits and audit as for any request."""
        self.principal = call.principal
        self.state["principal"] = call.principal
        self.usage.batch_id = call.batch_id
        self.usage.resources.append(call.batch_id)
        if call.principal is not None:
            self.usage.pii_guard = call.principal.pii_guard
            if call.principal.metered:
                self.meter()
        return await self.take_body()

    def meter(self) -> None:
        """Reserve credits through the usage record, from this process's lease of the organisation's credits."""
        assert self.principal is not None
        self.usage.reserver = self.reserve
        self.mw.leases.begin(self.principal.org_id)
        self.leased = True

    async def take_body(self) -> APIError | None:
        """Read and check the body; a file upload instead streams through, counted (413 past ``max_file_bytes``)."""
        if self.scope["method"] == "POST" and self.scope["path"] == "/v1/files":
            limit = self.mw.settings.max_file_bytes
            length = self.headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                return _too_large(limit)
            self.upload_limit = limit
            return None
        return await self.read_body(self.mw.settings.body_limit(self.scope["path"]))

    async def read_body(self, limit: int) -> APIError | None:
        """Take the whole body (at most ``limit`` bytes) and check it is sane UTF-8 JSON of bounded depth."""
        length = self.headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return _too_large(limit)
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
                return _too_large(limit)
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
        return None

    async def reserve(self, tokens: int) -> None:
        """Take ``tokens`` from the organisation's credits (the handler knows the exact prompt length and the
        most it can generate), or refuse the request with 429 ``insufficient_quota``."""
        assert self.principal is not None
        leases, org_id = self.mw.leases, self.principal.org_id
        if leases.try_local(org_id, tokens) or await to_thread.run_sync(leases.reserve, org_id, tokens):
            return
        left = await to_thread.run_sync(self.mw.quota.remaining, self.principal.org_id)
        raise APIError(
            f"You exceeded your current quota: this request may use up to {tokens} tokens and organisation "
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
        message = await self.receive()
        if self.upload_limit is not None and message["type"] == "http.request":
            self.upload_bytes += len(message.get("body", b""))
            if self.upload_bytes > self.upload_limit:
                raise _too_large(self.upload_limit)
        return message

    async def forward(self, message: Message) -> None:
        """Pass the app's messages on; settle and audit just before the last one (a stream's handler commits
        before its ``[DONE]`` event, through the usage record)."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = list(message.get("headers", []))
            if not any(k.lower() == b"x-request-id" for k, _ in headers):
                headers.append((b"x-request-id", self.request_id.encode()))
            if (self.usage.endpoint in GENERATION_ENDPOINTS and 200 <= self.status < 300
                    and self.scope["method"] in ("GET", "POST")):  # not a DELETE of a stored response
                headers += self.ai_generated_headers()
            message = {**message, "headers": headers}
        elif message["type"] == "http.response.body" and not message.get("more_body", False) and not self.finished:
            with anyio.CancelScope(shield=True):
                await self.finish()
        await self.send(message)

    def ai_generated_headers(self) -> list[tuple[bytes, bytes]]:
        """``X-AI-Generated: true`` and ``X-AI-Model``: the notice that the content is AI-generated."""
        model = self.usage.model
        if model is None:
            model = getattr(getattr(getattr(self.scope.get("app"), "state", None), "nexus", None),
                            "served_model_name", None)
        headers = [(b"x-ai-generated", b"true")]
        if model:
            headers.append((b"x-ai-model", quote(model, safe="/:._-@+").encode("ascii")))
        return headers

    async def refuse(self, error: APIError) -> None:
        """Answer with ``error`` without calling the app (and audit the refusal)."""
        self.status = error.status_code
        self.usage.error_type = error.type
        with anyio.CancelScope(shield=True):
            await self.finish()
        await error.response()(self.scope, self.replay_receive, self.send)

    async def finish(self) -> None:
        """Settle the credits and commit the audit row (once)."""
        if self.finished:
            return
        self.finished = True
        usage, principal = self.usage, self.principal
        entry = AuditEntry(
            request_id=self.request_id,
            method=self.scope["method"],
            path=self.scope["path"][:300],
            status=self.status,
            latency_ms=(time.perf_counter() - self.started) * 1000,
            org_name=principal.org_name if principal else None,
            key_prefix=principal.key_prefix if principal else None,
            model=usage.model,
            adapter=usage.adapter,
            end_user=(self.caller.proxy_user or usage.end_user or "")[:MAX_USER_CHARS] or None,
            client_ip=self.caller.ip,
            resources=list(usage.resources) or None,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            error_type=usage.error_type,
        )
        settlement = None
        if principal is not None:
            used = usage.total_tokens
            # A leased reservation's unused part goes back to the lease; the settlement returns to the database
            # what ``end`` gives back (once no request of the organisation is left in flight here: the lease but
            # its stock, which the lease keeper returns after ``credit_lease_idle_s``).
            back, leased = usage.reserved - used, self.leased
            if leased:
                back, self.leased = self.mw.leases.end(principal.org_id, usage.reserved, used), False
            settlement = Settlement(principal.org_id, used + back, used, leased)
        try:
            guard_counts = {kind: n for kind, n in usage.pii_counts.items() if n}
            entry.pii_counts = guard_counts or None
            if usage.capture_text:
                entry.prompt_text, entry.reply_text, counts = redact_pair(usage.prompt_text, usage.reply_text)
                # The guard saw the raw prompt and answer, the redaction what is stored (the answer raw, the
                # prompt already masked): the larger count per kind is the number found, without double counting.
                entry.pii_counts = {k: max(n, guard_counts.get(k, 0)) for k, n in counts.items()}
            await self.mw.records.record(entry, settlement, alone=self.mw.in_flight == 1)
        except Exception:
            log.exception("could not settle or audit request %s", self.request_id)
