"""Keys, quotas and audit for the server (being written; until then the server is open on loopback)."""

from __future__ import annotations

from fastapi import FastAPI

from serving.config import ServerSettings


def install_security(app: FastAPI, settings: ServerSettings) -> None:
    """Attach authentication, rate limits, quotas, audit and request-size limits to ``app``."""
    app.state.security_installed = False
