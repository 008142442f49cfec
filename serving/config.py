"""The server's settings: one typed model, filled by ``nexus-k serve`` options, the environment
(``NEXUS_K_<FIELD>``) and an optional YAML file, in that order of precedence.

Every setting is declared once, here or in :class:`serving.engines.settings.EngineSettings` (what an engine
needs); the command line is generated from these fields (``serving.cli``).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from nexus_k.core.errors import UserError
from nexus_k.core.settings import get_settings
from serving.engines.settings import EngineSettings, cli_flag

NOT_ON_CLI = {"cli": False}
EMBEDDING_PATHS = frozenset({"/v1/embeddings", "/v1/rerank", "/v2/rerank", "/rerank"})


def _default_database_url() -> str:
    path = get_settings().cache_dir / "nexus-k.db"
    return f"sqlite:///{path}"


def _default_data_dir() -> Path:
    return get_settings().cache_dir / "data"


class ServerSettings(EngineSettings, BaseSettings):
    """Everything the HTTP server needs to know; each field can be set as ``NEXUS_K_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="NEXUS_K_", extra="forbid", protected_namespaces=())

    served_model_name: str | None = Field(None, description="Name clients use in `model`; defaults to the path.")
    embedding_model: str | None = Field(
        None, description="An embedding model (folder or hub id) served beside the chat model, on its own engine.")
    served_embedding_model_name: str | None = Field(
        None, description="Name clients use for the embedding model; defaults to its path.")
    embedding_engine: Literal["vllm", "hf"] | None = Field(
        None, description="Engine of the embedding model (default: the chat model's; the bundled demo uses hf).")
    rerank_model: str | None = Field(
        None, description="A cross-encoder reranker (folder or hub id of a 1-label sequence classifier) served "
                          "beside the chat model, on its own engine: /v1/rerank naming it scores each (query, "
                          "document) pair with it instead of embedding cosine.")
    served_rerank_model_name: str | None = Field(
        None, description="Name clients use for the reranker; defaults to its path.")
    rerank_engine: Literal["vllm", "hf"] | None = Field(
        None, description="Engine of the reranker (default: the chat model's).")
    max_embedding_request_bytes: int = Field(
        64_000_000, ge=1, description="Largest /v1/embeddings or rerank body (2,048 long Korean passages fit).")
    tool_call_parser: str = Field(
        "hermes", description="vLLM's tool-call parser by name (hermes, pythonic, llama3_json, mistral, ...).")
    host: str = Field("127.0.0.1", description="Address to bind. Loopback by default: nothing is exposed.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port.")
    timeout_graceful_shutdown: int = Field(
        30, ge=1, description="On SIGTERM: seconds to let requests in flight finish (new ones get 503).")
    max_n: int = Field(16, ge=1, description="Largest `n` (choices per request) accepted.")
    max_request_bytes: int = Field(2_000_000, ge=1, description="Largest request body accepted (413 beyond).")
    max_json_depth: int = Field(64, ge=1, description="Deepest JSON nesting accepted in a request body (400 beyond).")
    database_url: str = Field(default_factory=_default_database_url,
                              description="SQLAlchemy URL for keys, quotas and audit (SQLite or PostgreSQL).")
    audit_content: bool = Field(False, description="Store prompts/replies in the audit log (PII redacted).")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        [], description="Reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For / X-Forwarded-User "
                        "/ X-Forwarded-Email headers are believed; from anyone else they are ignored.")
    sso_org: str | None = Field(
        None, description="Organisation that people signed in through a trusted single-sign-on proxy act for "
                          "(its X-Forwarded-User / X-Forwarded-Email, no API key); unset: keys only.")
    key_cache_ttl_s: float = Field(
        2.0, ge=0, description="Seconds a key lookup is cached in the process (0: every request asks the database); "
                               "bounds a change made in the database by hand.")
    key_version_check_s: float = Field(
        0.25, ge=0, description="Seconds between re-reads of the keys' change counter: a key revoked or an "
                                "organisation changed with `nexus-k keys` takes effect on every replica within this.")
    rate_batch_fraction: float = Field(
        0.1, ge=0, le=1, description="Share of what still fits in the minute's request limit that a process counts "
                                     "at once and admits without asking the database (1 slot at least).")
    credit_lease_fraction: float = Field(
        0.1, ge=0, le=1, description="Share of an organisation's credits left that a process leases at once and "
                                     "reserves from without asking the database (the reservation at least).")
    credit_lease_idle_s: float = Field(
        2.0, ge=0, description="Seconds an idle process keeps the stock of its credit lease (for its next request) "
                               "before giving it back; 0: give everything back as soon as it is idle.")
    audit_secret: SecretStr | None = Field(
        None, description="Secret key of the audit checkpoints (HMAC over the hash chain's head).",
        json_schema_extra=NOT_ON_CLI)
    audit_retention_days: int = Field(
        730, ge=1, description="Audit rows younger than this many days cannot be purged (PIPC: 2 years).")
    responses_retention_days: float = Field(
        30, gt=0, description="Stored responses (`/v1/responses` with `store`) are deleted after this many days.")
    data_dir: Path = Field(default_factory=_default_data_dir,
                           description="Folder for uploaded files and batch output (`/v1/files`).")
    max_file_bytes: int = Field(512 * 1024 * 1024, ge=1, description="Largest `/v1/files` upload (413 beyond).")
    batch_concurrency: int = Field(
        4, ge=0, description="Batch lines this process runs at once (interactive requests stay fast); 0: none.")
    batch_claim_timeout_s: float = Field(
        60, gt=0, description="A batch line whose runner has not renewed its claim for this long (killed) is run "
                              "again by another process or after a restart.")
    vector_store_ingest_concurrency: int = Field(
        1, ge=1, description="Documents this process turns into vector store chunks at once (text extraction, "
                             "chunking, embedding), off the request path.")
    ingest_timeout_s: float = Field(
        300, ge=0, description="Seconds one document's text extraction may take, in a child process that is killed "
                               "beyond (the file fails with that reason); 0: extract in a thread of the server.")
    ingest_max_chars: int = Field(
        20_000_000, ge=1, description="Most characters of text taken from one document added to a vector store "
                                      "(the file fails beyond).")
    ingest_max_uncompressed_bytes: int = Field(
        512 * 1024 * 1024, ge=1, description="Most bytes one document may inflate to (zip members of DOCX/XLSX/HWPX, "
                                             "HWP sections): zip bombs fail with a reason.")
    hybrid_text_weight: float = Field(
        1.0, ge=0, description="Weight of the Kiwi BM25 ranking in vector store search's reciprocal-rank fusion "
                               "(a request's ranking_options.hybrid_search overrides it).")
    hybrid_embedding_weight: float = Field(
        1.0, ge=0, description="Weight of the dense (embedding cosine) ranking in that fusion; 0: BM25 order only.")
    trim_vocab: Annotated[list[str], NoDecode] = Field(
        [], description="Corpus files (comma-separated): serve the model trimmed to the vocabulary they use (plus "
                        "special, byte-fallback and chat-template tokens), trimmed once into the cache; faster "
                        "decode on CPU for large-vocabulary models.")
    demo_precision: Literal["bf16", "int8"] = Field(
        "bf16", description="The demo model's weights when no --model is given: `int8` serves its smoothed W8A8 "
                            "copy (`nexus-k model int8`: about 1.4x the tokens/s on a CPU, +2.2% held-out Korean "
                            "perplexity).")
    web_ui: bool = Field(True, description="Serve the Korean chat page at `/`.")
    web_dir: Path = Field(Path(__file__).parent / "web", description="Folder of the chat page's static files.",
                          json_schema_extra=NOT_ON_CLI)
    public_paths: list[str] = Field(["/health"], description="Paths open to anyone, any method.",
                                    json_schema_extra=NOT_ON_CLI)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        """``10.0.0.1,10.1.0.0/16`` (environment, command line) as a list; each entry must be an IP or a CIDR."""
        import ipaddress

        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        for item in value or []:
            try:
                ipaddress.ip_network(str(item), strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or a CIDR network") from None
        return value

    @model_validator(mode="after")
    def _some_hybrid_weight(self) -> ServerSettings:
        if self.hybrid_text_weight == 0 and self.hybrid_embedding_weight == 0:
            raise ValueError("--hybrid-text-weight and --hybrid-embedding-weight cannot both be 0")
        return self

    @field_validator("trim_vocab", mode="before")
    @classmethod
    def _split_corpus(cls, value: Any) -> Any:
        """``a.txt,b.jsonl`` (environment, command line) as a list."""
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments (the command line) over the environment over the YAML file (``_config_file``)."""
        return init_settings, env_settings, InitSettingsSource(settings_cls, _FILE_VALUES.get("values", {}))

    def engine_settings(self) -> EngineSettings:
        """The part of these settings that the engine reads."""
        names = EngineSettings.model_fields
        values = {k: getattr(self, k) for k in self.model_fields_set if k in names}
        return EngineSettings(**{**values, "engine": self.engine, "model": self.model})

    def body_limit(self, path: str) -> int:
        """Largest request body accepted on ``path`` (embedding and rerank bodies carry whole corpora)."""
        return self.max_embedding_request_bytes if path in EMBEDDING_PATHS else self.max_request_bytes

    def embedding_engine_settings(self) -> EngineSettings:
        """The embedding model's engine: the same kind as the chat model's, pooling, with default options."""
        return self._side_engine_settings(self.embedding_engine, self.embedding_model, "pool")

    def rerank_engine_settings(self) -> EngineSettings:
        """The reranker's engine: the same kind as the chat model's, scoring pairs, with default options."""
        return self._side_engine_settings(self.rerank_engine, self.rerank_model, "score")

    def _side_engine_settings(self, engine: str | None, model: str | None, runner: str) -> EngineSettings:
        """An engine beside the chat model's: its dtype, trust and CPU/device options, everything else default."""
        engine = engine or self.engine
        cpu = ("kv_cache_gib", "engine_core_priority", "cpu_reserved_cores")
        names = ("dtype", "trust_remote_code", *(cpu if engine == "vllm" else ("device",)))
        values = {k: getattr(self, k) for k in names if k in self.model_fields_set}
        return EngineSettings(**{**values, "engine": engine, "model": model, "runner": runner})

    def summary(self) -> dict[str, Any]:
        """The resolved settings for the start-up log (the database password hidden)."""
        from sqlalchemy.engine import make_url

        data = self.model_dump(mode="json", exclude={"web_dir", "public_paths"})
        data["database_url"] = make_url(self.database_url).render_as_string(hide_password=True)
        return data


_FILE_VALUES: dict[str, dict[str, Any]] = {}


def read_config_file(path: Path) -> dict[str, Any]:
    """A serve YAML file's settings; unknown keys are an error naming the closest valid ones."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise UserError(f"--config: cannot read {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise UserError(f"--config: {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"--config: {path} must hold a mapping of settings, not {type(data).__name__}")
    fields = ServerSettings.model_fields
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"--config: unknown setting {key!r} in {path}{hint}")
    return data


def resolve_settings(cli_values: dict[str, Any], config_file: Path | None = None) -> ServerSettings:
    """The one settings object: command-line values over ``NEXUS_K_*`` over the YAML file over defaults.

    Engine arguments merge key by key (the command line's win). Invalid values are a ``UserError``.
    """
    file_values = read_config_file(config_file) if config_file is not None else {}
    cli_values = dict(cli_values)
    if "engine_args" in cli_values and isinstance(file_values.get("engine_args"), dict):
        cli_values["engine_args"] = {**file_values["engine_args"], **cli_values["engine_args"]}
    _FILE_VALUES["values"] = file_values
    try:
        return ServerSettings(**cli_values)
    except ValidationError as err:
        raise UserError(settings_error(err)) from None
    finally:
        _FILE_VALUES.pop("values", None)


def settings_error(err: ValidationError) -> str:
    """One line for the first problem of a settings validation error."""
    first = err.errors()[0]
    loc = [str(p) for p in first.get("loc", ())]
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if not loc:
        return message
    return f"{cli_flag(loc[0])}{'.' + '.'.join(loc[1:]) if len(loc) > 1 else ''}: {message}"
