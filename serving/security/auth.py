"""API keys: creation, listing, revocation and the per-request check.

A key is ``nxk-`` plus 43 URL-safe characters (256 random bits). Only its SHA-256 is stored, with the
first 12 characters in clear so that operators can tell keys apart. A fast hash is the right tool here:
slow password hashes (bcrypt, argon2) exist to make guessing low-entropy passwords expensive, and no
amount of hashing speed makes a 256-bit random secret guessable; a fast hash also lets the server find
a key with one indexed lookup.

Each server process caches the lookups (:class:`KeyCache`: key hash -> principal) so that a request pays no
database round trip for its key. Revocation stays prompt: every change made through :class:`KeyStore`
(``nexus-k keys create/update/revoke``) bumps a counter row (``keys_version``) and clears the caches of its own
process at once; every other process re-reads the counter at most every ``key_version_check_s`` (0.25 s) and
drops its cache when it moved, so a revoked key is refused everywhere within that bound. An entry also expires
after ``key_cache_ttl_s`` (2 s): the bound for a change written to the database by hand, without the counter.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from nexus_k.core.errors import UserError
from serving.storage.db import ApiKey, KeysVersion, Organisation, get_sessionmaker, utcnow

KEY_SCHEME = "nxk-"
"""Every key starts with this, so secret scanners and people recognise one."""
PREFIX_CHARS = 12
"""How much of a key is stored (and shown) in clear."""


def generate_key() -> str:
    """A new random API key (256 bits of entropy)."""
    return KEY_SCHEME + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of ``key``: SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_prefix(key: str) -> str:
    """The part of ``key`` kept in clear."""
    return key[:PREFIX_CHARS]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the organisation behind a valid key."""

    org_id: int
    org_name: str
    key_prefix: str
    rpm: int | None
    """Requests per minute allowed (None: no limit)."""
    metered: bool
    """True when the organisation has a token budget."""
    pii_guard: str = "off"
    """The organisation's live personal-data guard: ``off``, ``mask`` or ``block`` (``serving.security.pii_guard``)."""


@dataclass(frozen=True)
class KeyInfo:
    """One row of ``nexus-k keys list``."""

    id: int
    prefix: str
    org: str
    created_at: datetime
    revoked_at: datetime | None
    rpm: int | None
    token_quota: int | None
    tokens_remaining: int | None
    tokens_used: int
    pii_guard: str = "off"


class KeyCache:
    """One process's cache of key lookups (key hash -> principal; organisation name -> principal for single
    sign-on). Only valid keys are cached: an unknown or revoked key is looked up every time.

    ``clock`` (seconds, monotonic) is injectable so that tests drive time instead of sleeping."""

    def __init__(self, ttl_s: float = 2.0, version_check_s: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.version_check_s, self.clock = ttl_s, version_check_s, clock
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()
        self._version: int | None = None
        self._checked_at = -float("inf")
        self.epoch = 0
        """Bumped by every clear: a lookup that began before a clear must not refill the cache."""

    def version_check_due(self) -> bool:
        """Whether the shared ``keys_version`` counter must be re-read before the cache may answer."""
        return self.clock() - self._checked_at >= self.version_check_s

    def get(self, name: str) -> Principal | None:
        """The cached principal, or None (unknown, expired, or a version check is due: ask the database)."""
        if self.ttl_s <= 0 or self.version_check_due():
            return None
        hit = self._entries.get(name)
        if hit is None or self.clock() - hit[1] >= self.ttl_s:
            return None
        return hit[0]

    def put(self, name: str, principal: Principal, fetched_at: float, epoch: int) -> None:
        """Remember ``principal``, looked up from ``fetched_at`` on, unless the cache was cleared since."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            if epoch == self.epoch:
                self._entries[name] = (principal, fetched_at)

    def clear(self) -> None:
        """Forget everything (a key or an organisation changed)."""
        with self._lock:
            self._entries.clear()
            self.epoch += 1

    def check_version(self, read_version: Callable[[], int]) -> None:
        """Re-read the shared counter if due; clear the cache when it moved."""
        if not self.version_check_due():
            return
        started = self.clock()
        version = read_version()
        with self._lock:
            if version != self._version:
                self._entries.clear()
                self.epoch += 1
                self._version = version
            self._checked_at = max(self._checked_at, started)


_LOCAL_CACHES: dict[str, weakref.WeakSet[KeyCache]] = {}
_LOCAL_LOCK = threading.Lock()


def _register_cache(database_url: str, cache: KeyCache) -> None:
    with _LOCAL_LOCK:
        _LOCAL_CACHES.setdefault(database_url, weakref.WeakSet()).add(cache)


def _clear_local_caches(database_url: str) -> None:
    """A change made in this process is seen by this process's caches at once."""
    with _LOCAL_LOCK:
        caches = list(_LOCAL_CACHES.get(database_url, ()))
    for cache in caches:
        cache.clear()


def _bump_version(s: Any) -> None:
    """Move the shared ``keys_version`` counter (inside the transaction that changes a key or organisation)."""
    insert_fn = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    s.execute(insert_fn(KeysVersion).values(id=1, version=0).on_conflict_do_nothing())
    s.execute(update(KeysVersion).where(KeysVersion.id == 1).values(version=KeysVersion.version + 1))


class KeyStore:
    """Keys and organisations in the security database.

    ``cache``: the server's :class:`KeyCache` (None: every lookup goes to the database, as the CLI does).
    ``notify_local``: whether a change made here clears this process's caches at once (tests turn it off to
    play another replica, which only the ``keys_version`` counter reaches)."""

    def __init__(self, database_url: str, cache: KeyCache | None = None, notify_local: bool = True) -> None:
        self.database_url = database_url
        self.sessions = get_sessionmaker(database_url)
        self._keys_exist = False
        self.cache = cache
        self.notify_local = notify_local
        if cache is not None:
            _register_cache(database_url, cache)

    def _changed(self) -> None:
        if self.notify_local:
            _clear_local_caches(self.database_url)

    def _read_version(self) -> int:
        with self.sessions() as s:
            return s.scalar(select(KeysVersion.version).where(KeysVersion.id == 1)) or 0

    def cached_key(self, key: str) -> Principal | None:
        """The cached principal of a presented key without touching the database, or None (ask
        :meth:`authenticate`). Cache entries of keys are named by their hex digest, of organisations by
        ``org:NAME``: no presented key can name an organisation's entry."""
        return self.cache.get(hash_key(key)) if self.cache is not None else None

    def cached_org(self, org: str) -> Principal | None:
        """The cached single-sign-on principal of ``org``, or None (ask :meth:`principal_for_org`)."""
        return self.cache.get("org:" + org) if self.cache is not None else None

    def create(self, org: str, rpm: int | None = None, token_quota: int | None = None,
               pii_guard: str | None = None) -> str:
        """Create a key for ``org`` (the organisation too if new; limits given replace the old) and
        return it; this is the only time the key exists in clear."""
        if not org.strip():
            raise UserError("--org must not be empty")
        key = generate_key()
        with self.sessions.begin() as s:
            organisation = s.scalar(select(Organisation).where(Organisation.name == org))
            if organisation is None:
                organisation = Organisation(name=org, tokens_used=0)
                s.add(organisation)
            _set_limits(organisation, rpm, token_quota, pii_guard)
            s.flush()
            s.add(ApiKey(org_id=organisation.id, prefix=key_prefix(key), key_hash=hash_key(key)))
            _bump_version(s)
        self._changed()
        self._keys_exist = True
        return key

    def update(self, org: str, rpm: int | None = None, token_quota: int | None = None,
               pii_guard: str | None = None) -> None:
        """Change an existing organisation's limits or PII guard (only what is given); its keys stay valid."""
        with self.sessions.begin() as s:
            organisation = s.scalar(select(Organisation).where(Organisation.name == org))
            if organisation is None:
                raise UserError(f"no organisation named {org!r} (see `nexus-k keys list`)")
            _set_limits(organisation, rpm, token_quota, pii_guard)
            _bump_version(s)
        self._changed()

    def list(self) -> list[KeyInfo]:
        """Every key ever made, oldest first."""
        with self.sessions() as s:
            rows = s.execute(select(ApiKey, Organisation).join(Organisation).order_by(ApiKey.id)).all()
        return [
            KeyInfo(
                k.id,
                k.prefix,
                o.name,
                k.created_at,
                k.revoked_at,
                o.rpm,
                o.token_quota,
                # Credits leased by server processes are still the organisation's until spent.
                None if o.tokens_remaining is None else o.tokens_remaining + (o.tokens_leased or 0),
                o.tokens_used,
                o.pii_guard or "off",
            )
            for k, o in rows
        ]

    def revoke(self, prefix_or_id: str) -> KeyInfo:
        """Revoke one key, named by its visible prefix (or its id); refuse ambiguous prefixes."""
        with self.sessions.begin() as s:
            query = select(ApiKey).where(ApiKey.prefix.startswith(prefix_or_id, autoescape=True))
            if prefix_or_id.isdigit():
                query = select(ApiKey).where(ApiKey.id == int(prefix_or_id))
            matches = s.scalars(query).all()
            if not matches:
                raise UserError(f"no key matches {prefix_or_id!r} (see `nexus-k keys list`)")
            if len(matches) > 1:
                raise UserError(f"{len(matches)} keys match {prefix_or_id!r}; give the id instead")
            key = matches[0]
            if key.revoked_at is None:
                key.revoked_at = utcnow()
            key_id = key.id
            _bump_version(s)
        self._changed()
        return next(info for info in self.list() if info.id == key_id)

    def principal_for_org(self, org: str) -> Principal | None:
        """The principal of organisation ``org`` for a person a trusted single-sign-on proxy vouches for (no key;
        ``sso`` stands where a key's prefix would); None when there is no such organisation."""
        return self._lookup("org:" + org, lambda: self._org_principal(org))

    def _org_principal(self, org: str) -> Principal | None:
        with self.sessions() as s:
            found = s.scalar(select(Organisation).where(Organisation.name == org))
        if found is None:
            return None
        return Principal(found.id, found.name, "sso", found.rpm, found.tokens_remaining is not None,
                         found.pii_guard or "off")

    def _lookup(self, name: str, fetch: Callable[[], Principal | None]) -> Principal | None:
        """``fetch()`` through the cache (if any): the version check first, so what is fetched is no older."""
        cache = self.cache
        if cache is None:
            return fetch()
        cache.check_version(self._read_version)
        hit = cache.get(name)
        if hit is not None:
            return hit
        epoch, started = cache.epoch, cache.clock()
        principal = fetch()
        if principal is not None:
            cache.put(name, principal, started, epoch)
        return principal

    def keys_exist(self) -> bool:
        """Whether any key was ever created (revoked ones count: revoking every key must not open the
        server). Once true it stays true for this process, so only an open server pays the lookup."""
        if not self._keys_exist:
            with self.sessions() as s:
                self._keys_exist = s.scalar(select(ApiKey.id).limit(1)) is not None
        return self._keys_exist

    def authenticate(self, key: str) -> Principal | None:
        """The principal for a presented key, or None for an unknown or revoked one."""
        digest = hash_key(key)
        return self._lookup(digest, lambda: self._key_principal(digest))

    def _key_principal(self, digest: str) -> Principal | None:
        with self.sessions() as s:
            row = s.execute(select(ApiKey, Organisation).join(Organisation).where(ApiKey.key_hash == digest)).first()
        if row is None:
            return None
        api_key, org = row
        # The lookup is by digest; comparing again in constant time keeps the check itself free of
        # timing differences whatever the database's index does.
        if not hmac.compare_digest(api_key.key_hash, digest) or api_key.revoked_at is not None:
            return None
        return Principal(org.id, org.name, api_key.prefix, org.rpm, org.tokens_remaining is not None,
                         org.pii_guard or "off")


PII_GUARD_MODES = ("off", "mask", "block")


def _set_limits(organisation: Organisation, rpm: int | None, token_quota: int | None, pii_guard: str | None) -> None:
    """Apply the limits given (None: leave as is) to ``organisation``, checking each."""
    if rpm is not None and rpm < 1:
        raise UserError("--rpm must be at least 1")
    if token_quota is not None and token_quota < 0:
        raise UserError("--token-quota must be 0 or more")
    if pii_guard is not None and pii_guard not in PII_GUARD_MODES:
        raise UserError(f"--pii-guard must be one of {', '.join(PII_GUARD_MODES)}, not {pii_guard!r}")
    if rpm is not None:
        organisation.rpm = rpm
    if token_quota is not None:
        used = organisation.tokens_used or 0
        organisation.token_quota = token_quota
        # Leases out in server processes come back (or are spent) later: leave room for them.
        organisation.tokens_remaining = token_quota - used - (organisation.tokens_leased or 0)
    if pii_guard is not None:
        organisation.pii_guard = None if pii_guard == "off" else pii_guard


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
