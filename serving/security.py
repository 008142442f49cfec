"""Keys, quotas, audit and request-size limits for the server: one pure ASGI middleware around it all.

See ``docs/security.md`` for what is open, what needs a key, and how credits are counted.
"""

from __future__ import annotations

from fastapi import FastAPI

from serving.config import ServerSettings
from serving.db import get_engine
from serving.drain import DrainMiddleware, DrainState
from serving.middleware import SecurityMiddleware
from serving.security_settings import SecuritySettings


def install_security(app: FastAPI, settings: ServerSettings) -> None:
    """Attach authentication, rate limits, quotas, audit, request-size limits and the SIGTERM drain
    (``app.state.drain``, see ``serving.drain``) to ``app``."""
    security = SecuritySettings.from_server(settings)
    get_engine(security.database_url)  # a wrong URL or an unreachable database fails at start-up
    app.state.drain = DrainState()
    # Inside the security layer: a request refused during the drain is still authenticated and audited,
    # and a request in flight counts until its audit row is written.
    app.add_middleware(DrainMiddleware, state=app.state.drain)
    app.add_middleware(SecurityMiddleware, settings=security)
    app.state.security_installed = True
    app.state.security_settings = security
