"""Keys, quotas, audit and request-size limits for the server: one pure ASGI middleware around it all.

See ``docs/security.md`` for what is open, what needs a key, and how credits are counted.
"""

from __future__ import annotations

from fastapi import FastAPI

from serving.config import ServerSettings
from serving.drain import DrainMiddleware, DrainState
from serving.security.middleware import SecurityMiddleware
from serving.storage.db import get_engine

PAGE_PATHS = ("/", "/index.html", "/favicon.ico")


def install_security(app: FastAPI, settings: ServerSettings) -> None:
    """Attach authentication, rate limits, quotas, audit, request-size limits and the SIGTERM drain
    (``app.state.drain``, see ``serving.drain``) to ``app``."""
    get_engine(settings.database_url)  # a wrong URL or an unreachable database fails at start-up
    pages = set(PAGE_PATHS)
    if settings.web_ui and settings.web_dir.is_dir():  # the chat page's files are open to GET: it asks for a key
        pages |= {"/" + p.relative_to(settings.web_dir).as_posix() for p in settings.web_dir.rglob("*") if p.is_file()}
    app.state.drain = DrainState()
    # Inside the security layer: a request refused during the drain is still authenticated and audited,
    # and a request in flight counts until its audit row is written.
    app.add_middleware(DrainMiddleware, state=app.state.drain)
    app.add_middleware(SecurityMiddleware, settings=settings, page_paths=frozenset(pages))
    app.state.security_installed = True
