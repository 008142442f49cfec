"""Graceful shutdown: on SIGTERM the server answers new requests ``503 server_shutting_down`` while the
requests already in flight (streams included) run to their end, then it stops listening and exits.

uvicorn alone closes the listening socket at once and resets connections whose request it has not read
yet; a client or load balancer then sees a connection error it cannot tell from a crash. Here the port
stays open during the drain and every new request, ``/health`` included, gets a clear answer, so a load
balancer takes the replica out of rotation while its last answers finish. See ``docs/security.md``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn

from serving.errors import APIError
from serving.usage import usage_of

log = logging.getLogger(__name__)

Scope = dict[str, Any]
ASGIApp = Any


@dataclass
class DrainState:
    """Shared between the signal handler, the middleware and the server."""

    draining: bool = False
    """True from the first SIGTERM/SIGINT on: new requests are refused with 503."""
    in_flight: int = 0
    """HTTP requests admitted before the drain began and not finished yet."""


def shutting_down_error(retry_after_s: int = 5) -> APIError:
    """The answer to a request that arrives while the server drains."""
    return APIError(
        "The server is shutting down and takes no new requests; retry on another replica.",
        503,
        "server_error",
        None,
        "server_shutting_down",
        {"Retry-After": str(retry_after_s), "Connection": "close"},
    )


class DrainMiddleware:
    """Counts requests in flight; once the drain has begun, answers new ones 503 without running them."""

    def __init__(self, app: ASGIApp, state: DrainState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.state.draining:
            error = shutting_down_error()
            usage_of(scope.setdefault("state", {})).error_type = error.type
            await error.response()(scope, receive, send)
            return
        self.state.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.in_flight -= 1


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but a signal first starts the drain and the listening socket closes only once the
    requests in flight are done (or ``timeout_graceful_shutdown`` has passed)."""

    def __init__(self, config: uvicorn.Config, drain: DrainState) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Refuse new requests from this moment on (runs in the signal handler: sets a flag only)."""
        self.drain.draining = True
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: Any = None) -> None:
        """Wait for the requests in flight while still answering 503, then uvicorn's own shutdown."""
        grace = self.config.timeout_graceful_shutdown
        deadline = None if grace is None else time.monotonic() + grace
        if self.drain.in_flight:
            log.info("Draining %d request(s) in flight; new requests get 503.", self.drain.in_flight)
        while self.drain.in_flight and not self.force_exit:
            if deadline is not None and time.monotonic() >= deadline:
                log.error("Grace period of %s s over with %d request(s) still running.", grace,
                          self.drain.in_flight)
                break
            await asyncio.sleep(0.05)
        if deadline is not None:
            self.config.timeout_graceful_shutdown = max(0, math.ceil(deadline - time.monotonic()))
        await super().shutdown(sockets)
        # Requests cut at the end of the grace period are cancelled but still settle credits and write
        # their audit row; give them that moment, or asyncio.run would cancel them a second time.
        cut = [task for task in self.server_state.tasks if not task.done()]
        if cut:
            await asyncio.wait(cut, timeout=10)


def run_server(app: Any, drain: DrainState, *, host: str, port: int, graceful_timeout_s: int) -> None:
    """Run ``app`` with uvicorn until SIGTERM/SIGINT, draining as described above."""
    # proxy_headers off: uvicorn would rewrite the peer from X-Forwarded-For (trusting 127.0.0.1 by default);
    # the security layer reads those headers itself, from the operator's trusted_proxies only.
    config = uvicorn.Config(app, host=host, port=port, log_level="info", proxy_headers=False,
                            timeout_graceful_shutdown=graceful_timeout_s)
    DrainingServer(config, drain).run()
