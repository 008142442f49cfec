"""The security database: organisations, their API keys, rate-limit windows and the audit log.

One SQLAlchemy schema for SQLite (the default, a file in the cache) and PostgreSQL (several server
replicas share one). Every counter that more than one process may touch (credits, rate windows) is
changed with a single conditional ``UPDATE`` so that the database, not the process, serialises them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import lru_cache

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of the security tables."""


class Organisation(Base):
    """A customer (an agency, a team): owns keys, a request rate and a token budget."""

    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Most requests per minute (None: no limit)."""
    token_quota: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Credits granted in total, in tokens (None: unlimited)."""
    tokens_remaining: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Credits left, minus what running requests have reserved (None: unlimited)."""
    tokens_used: Mapped[int] = mapped_column(BigInteger, default=0)
    """Tokens (prompt + completion) settled so far."""
    tokens_leased: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Credits server processes took out of ``tokens_remaining`` in blocks (``serving.security.leases``) and have not
    yet spent or given back (None: 0). ``tokens_remaining + tokens_leased + tokens_used = token_quota``."""
    pii_guard: Mapped[str | None] = mapped_column(String(8), nullable=True)
    """Live personal-data guard on prompts and answers: ``off`` (None), ``mask`` or ``block``."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key: only its SHA-256 is stored, with a short visible prefix to tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RateWindow(Base):
    """How many requests an organisation made in one clock minute (shared by every replica)."""

    __tablename__ = "rate_windows"

    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    """Minutes since the Unix epoch."""
    count: Mapped[int] = mapped_column(Integer, default=0)


class KeysVersion(Base):
    """A counter every change to keys or organisations bumps (one row, ``id`` 1): each server process caches
    key lookups and re-reads this at most every ``key_version_check_s`` to drop its cache when it moved."""

    __tablename__ = "keys_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class AuditRecord(Base):
    """One answered (or refused) request."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_org_time", "org_name", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    org_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """None when the server runs without keys."""
    key_prefix: Mapped[str | None] = mapped_column(String(32), nullable=True)
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(300))
    model: Mapped[str | None] = mapped_column(String(300), nullable=True)
    adapter: Mapped[str | None] = mapped_column(String(300), nullable=True)
    """The LoRA adapter that served the request (None: the base model)."""
    end_user: Mapped[str | None] = mapped_column(String(300), nullable=True)
    """The person the request was for: a trusted SSO proxy's ``X-Forwarded-User`` / ``X-Forwarded-Email``,
    else OpenAI's ``user`` / ``safety_identifier``."""
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The client's address (from ``X-Forwarded-For`` only when the peer is a trusted proxy)."""
    resources: Mapped[list | None] = mapped_column(JSON, nullable=True)
    """Ids of stored objects the request touched (files, vector stores, responses, batches)."""
    status: Mapped[int] = mapped_column(Integer)
    """HTTP status; 499 when the client went away before the answer was complete."""
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float)
    error_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prompt_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Only when the operator turned ``audit_content`` on, personal data redacted."""
    reply_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    pii_counts: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    """Personal data found, per kind: by the PII guard, and by the redaction of ``audit_content``."""
    prev_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The digest of the row before this one in the hash chain (``serving.security.audit_chain``)."""
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """SHA-256 over this row's content and ``prev_digest``: altering, inserting or deleting a row breaks it."""


class AuditChainHead(Base):
    """The hash chain's two ends (one row, ``id`` 1): the last row chained, and the anchor the first row
    chains from (the digest of the last purged row; zeros at the start). Written in the recorder's commit."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
    last_digest: Mapped[str] = mapped_column(String(64))
    anchor_id: Mapped[int] = mapped_column(BigInteger, default=0)
    """Rows with ids up to this one are outside the chain (purged, or written before chaining began)."""
    anchor_digest: Mapped[str] = mapped_column(String(64))
    anchor_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """When the anchor last moved (a purge)."""


class StoredResponse(Base):
    """A response of ``POST /v1/responses`` kept for ``GET``, ``previous_response_id`` and ``input_items``."""

    __tablename__ = "responses"
    __table_args__ = (Index("ix_responses_org_created", "org_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The organisation whose key created it (None when the server runs without keys)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    response: Mapped[dict] = mapped_column(JSON)
    """The response object as the API returns it."""
    input_items: Mapped[list] = mapped_column(JSON)
    """The whole conversation it answered (earlier turns of a ``previous_response_id`` chain included)."""


def _sqlite_module():  # type: ignore[no-untyped-def]
    """The SQLite driver: the standard library's when it can load extensions (for sqlite-vec), else
    ``pysqlite3`` (Python builds such as pyenv's leave extension loading out)."""
    import sqlite3

    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return sqlite3
    try:
        from pysqlite3 import dbapi2
    except ImportError as err:
        raise RuntimeError("this Python's sqlite3 cannot load extensions (sqlite-vec, for vector stores): "
                           "install pysqlite3-binary, or use a Python built with loadable SQLite extensions") from err
    return dbapi2


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # sqlite-vec: vector stores rank chunks by vec_distance_cosine in the database.
    import sqlite_vec

    dbapi_conn.enable_load_extension(True)
    sqlite_vec.load(dbapi_conn)
    dbapi_conn.enable_load_extension(False)
    # WAL lets readers run beside the single writer; a committed transaction survives kill -9 (it is in
    # the OS page cache); NORMAL only risks the last transactions on a power cut.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    # Reads through a memory map rather than a read() per page: vector store search scans every vector of a
    # store (100 MB at 100k chunks of 256 dimensions). Address space only; the OS page cache holds the pages.
    cur.execute("PRAGMA mmap_size=4294967296")
    cur.close()


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine for ``url`` (SQLite file or PostgreSQL), tables created if missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            from pathlib import Path

            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, module=_sqlite_module(),
                               connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
    _create_tables(engine)
    return engine


def _create_tables(engine: Engine) -> None:
    """Create missing tables and columns; on PostgreSQL under an advisory lock, since replicas start together."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))
            _ensure_pgvector(conn)
        Base.metadata.create_all(conn)
        _add_missing_columns(conn)


def _ensure_pgvector(conn: Connection) -> None:
    """pgvector, for the vector stores' ``vector`` column: created if missing (needs a role allowed to)."""
    if conn.scalar(text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")):
        return
    try:
        with conn.begin_nested():
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    except Exception as err:
        raise RuntimeError("the PostgreSQL database lacks the pgvector extension and this role cannot create it: "
                           "run `CREATE EXTENSION vector` in it as a superuser") from err


def _add_missing_columns(conn: Connection) -> None:
    """Additive migration: a nullable column added to a model since the table was made is added to it."""
    existing = inspect(conn)
    for table in Base.metadata.sorted_tables:
        have = {c["name"] for c in existing.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                raise RuntimeError(f"table {table.name} lacks non-nullable column {column.name}: migrate by hand")
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
            log.info("added column %s.%s", table.name, column.name)


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """The process's engine for ``url`` (one pool per URL)."""
    log.debug("security database: %s", make_url(url).render_as_string(hide_password=True))
    return make_engine(url)


def ensure_tables(url: str) -> None:
    """Create the tables of model modules imported after the engine for ``url`` was opened (files, batches)."""
    _create_tables(get_engine(url))


def get_sessionmaker(url: str) -> sessionmaker:
    """A session factory bound to the engine for ``url``."""
    return sessionmaker(get_engine(url), expire_on_commit=False)
