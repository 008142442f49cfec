"""Sovereignty: serving, evaluation and fine-tuning on the tiny model attempt no outbound connection.

A socket guard records (and refuses) every connection or name lookup that is not loopback or a Unix
socket; each test runs real code under it and asserts that the record is empty.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

LOOPBACK_NAMES = {None, "", "localhost", "localhost.localdomain", "ip6-localhost"}


def _is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


class SocketGuard:
    """Refuses, and records, any non-loopback connect/sendto and any lookup of a non-loopback name."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[str] = []
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
        real_sendto, real_getaddrinfo = socket.socket.sendto, socket.getaddrinfo
        guard = self

        def allowed(sock: socket.socket, address: object) -> bool:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                return True  # Unix sockets, socketpairs
            return _is_loopback(address[0] if isinstance(address, tuple) else address)

        def refuse(what: str) -> None:
            guard.attempts.append(what)
            raise OSError(f"socket guard: outbound network access refused ({what})")

        def connect(sock: socket.socket, address: object) -> None:
            if not allowed(sock, address):
                refuse(f"connect {address}")
            return real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: object) -> int:
            if not allowed(sock, address):
                refuse(f"connect_ex {address}")
            return real_connect_ex(sock, address)

        def sendto(sock: socket.socket, data: bytes, *args: object) -> int:
            address = args[-1]
            if not allowed(sock, address):
                refuse(f"sendto {address}")
            return real_sendto(sock, data, *args)

        def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
            if not _is_loopback(host):
                refuse(f"getaddrinfo {host}")
            return real_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket.socket, "sendto", sendto)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[SocketGuard]:
    from nexus_k.core.settings import apply_offline_policy, get_settings

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    apply_offline_policy(get_settings())  # the CLI's own policy, not the test suite's
    yield SocketGuard(monkeypatch)


def test_guard_catches_real_attempts(guard: SocketGuard) -> None:
    with pytest.raises(OSError, match="socket guard"):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    with pytest.raises(OSError, match="socket guard"):
        socket.create_connection(("10.255.255.1", 80), timeout=1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(OSError, match="socket guard"):
        udp.sendto(b"x", ("8.8.8.8", 53))
    assert len(guard.attempts) == 3
    with socket.socket() as server:  # loopback stays usable
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=1).close()
    assert len(guard.attempts) == 3


def test_hub_is_off_unless_asked(guard: SocketGuard, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from nexus_k.core.settings import SharedSettings, apply_offline_policy

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"
    from transformers import AutoTokenizer

    with pytest.raises(OSError):
        AutoTokenizer.from_pretrained("nexus-k/not-a-local-model")
    assert guard.attempts == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    apply_offline_policy(SharedSettings(allow_hub=True))
    assert "HF_HUB_OFFLINE" not in os.environ  # only an explicit --allow-hub lets the hub in


def test_serving_makes_no_outbound_connection(guard: SocketGuard, tiny_model_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from serving.app import build_app
    from serving.config import ServerSettings

    settings = ServerSettings(
        model=str(tiny_model_dir),
        engine="hf",
        served_model_name="tiny-ko",
        max_model_len=256,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        audit_content=True,
    )
    with TestClient(build_app(settings)) as client:  # the app starts (and stops) its own engine
        body = {"model": "tiny-ko", "messages": [{"role": "user", "content": "안녕하세요"}], "max_tokens": 4}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
        assert streamed.text.rstrip().endswith("data: [DONE]")
        assert client.get("/").status_code == 200
    assert guard.attempts == []


@pytest.mark.slow
def test_finetune_makes_no_outbound_connection(guard: SocketGuard, tiny_model_dir: Path, tmp_path: Path) -> None:
    from nexus_k.cli import app

    chat = tmp_path / "chat.jsonl"
    line = (
        '{"messages": [{"role": "user", "content": "여권 발급은 어디서 하나요?"}, '
        '{"role": "assistant", "content": "구청 민원실에서 신청하실 수 있습니다."}]}\n'
    )
    chat.write_text(line * 6, encoding="utf-8")
    args = [
        "finetune",
        "--base",
        str(tiny_model_dir),
        "--data",
        str(chat),
        "--out",
        str(tmp_path / "lora"),
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--lora-r",
        "4",
        "--threads",
        "1",
        "--precision",
        "fp32",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert guard.attempts == []


@pytest.mark.slow
def test_evaluation_makes_no_outbound_connection(
    guard: SocketGuard, tiny_model_dir: Path, tmp_path: Path, shared_data: Path
) -> None:
    from nexus_k.cli import app

    args = [
        "eval",
        "run",
        "--model",
        str(tiny_model_dir),
        "--backend",
        "hf",
        "--dtype",
        "float32",
        "--tasks",
        "kobest_copa",
        "--limit",
        "2",
        "--out",
        str(tmp_path / "eval"),
        "--data-dir",
        str(shared_data),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert guard.attempts == []
