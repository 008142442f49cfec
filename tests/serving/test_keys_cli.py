"""``nexus-k keys``: create prints the key once, list shows prefixes only, revoke takes effect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from nexus_k.cli import app
from nexus_k.core.errors import UserError
from serving.security.auth import KeyStore, hash_key

runner = CliRunner()


def test_create_list_revoke_audit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    created = runner.invoke(
        app, ["keys", "create", "--org", "서울시청", "--rpm", "60", "--token-quota", "100000", "--database-url", url]
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("nxk-") and len(key) >= 40
    principal = KeyStore(url).authenticate(key)
    assert principal is not None and principal.org_name == "서울시청" and principal.rpm == 60

    listed = runner.invoke(app, ["keys", "list", "--database-url", url], env={"COLUMNS": "200"})
    assert listed.exit_code == 0
    assert key[:12] in listed.stdout and key not in listed.stdout and hash_key(key) not in listed.stdout
    assert "서울시청" in listed.stdout and "100000" in listed.stdout and "active" in listed.stdout

    revoked = runner.invoke(app, ["keys", "revoke", key[:12], "--database-url", url])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert KeyStore(url).authenticate(key) is None
    assert "revoked" in runner.invoke(app, ["keys", "list", "--database-url", url], env={"COLUMNS": "200"}).stdout

    audit = runner.invoke(app, ["keys", "audit", "--database-url", url])
    assert audit.exit_code == 0


def test_second_key_keeps_the_organisation_and_its_credits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    store = KeyStore(url)
    first = store.create("a", token_quota=50)
    second = store.create("a")
    assert first != second
    infos = store.list()
    assert [i.org for i in infos] == ["a", "a"] and infos[1].tokens_remaining == 50


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "nexus_k", "keys", "revoke", "nxk-nothing", "--database-url", url],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: no key matches") and len(done.stderr.strip().splitlines()) == 1
    bad_rpm = runner.invoke(app, ["keys", "create", "--org", "a", "--rpm", "0", "--database-url", url])
    assert isinstance(bad_rpm.exception, UserError) and "--rpm" in str(bad_rpm.exception)
    unreachable = runner.invoke(app, ["keys", "list", "--database-url", "postgresql://nobody@127.0.0.1:1/none"])
    assert isinstance(unreachable.exception, UserError) and "cannot open the key database" in str(unreachable.exception)
