"""Settings of the security layer: the server's own (database, limits) plus a few of its own knobs."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.config import ServerSettings


class SecuritySettings(BaseSettings):
    """What the security middleware needs; each field can be set as ``NEXUS_K_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="NEXUS_K_", extra="ignore")

    database_url: str = Field(description="SQLAlchemy URL of the keys/quota/audit database.")
    audit_content: bool = Field(False, description="Store prompts and replies (PII redacted) in the audit log.")
    max_request_bytes: int = Field(2_000_000, description="Largest request body accepted (413 beyond).")
    max_n: int = Field(16, description="Largest `n` the server accepts (bounds a credit reservation).")
    context_tokens: int = Field(
        4096,
        description="Context length assumed for credit reservations when "
        "the engine does not tell (prompt + completion, in tokens).",
    )
    max_json_depth: int = Field(64, description="Deepest JSON nesting accepted in a request body (400 beyond).")
    public_paths: list[str] = Field(["/health"], description="Paths open to anyone, any method.")
    page_paths: list[str] = Field(
        ["/", "/index.html", "/favicon.ico"], description="The chat page: open to GET without a key (it asks for one)."
    )

    @classmethod
    def from_server(cls, server: ServerSettings) -> SecuritySettings:
        """The server's own values for the fields both share (the chat page's files are open to GET,
        wherever the server mounts them); the rest from the environment."""
        security = cls(
            database_url=server.database_url,
            audit_content=server.audit_content,
            max_request_bytes=server.max_request_bytes,
            max_n=server.max_n,
            **({"context_tokens": server.max_model_len} if server.max_model_len else {}),
        )
        if server.web_ui and server.web_dir.is_dir():
            files = ["/" + p.relative_to(server.web_dir).as_posix() for p in server.web_dir.rglob("*") if p.is_file()]
            security.page_paths = sorted({*security.page_paths, *files})
        return security
