"""The security layer: keys, rate limits, credits, the hash-chained audit log and the PII guard, as one pure
ASGI middleware (``middleware.py``) that commits the usage record handlers fill; ``install.py`` attaches it."""
