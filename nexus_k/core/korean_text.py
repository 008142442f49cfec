"""The public-domain Korean text shipped with the package (data/README.md): tests and demos need no downloads."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

BUNDLED_KOREAN_FILE = "ko_dongbaekkot.txt"


def bundled_korean_path() -> Path:
    """Path of the bundled Korean text file (a corpus spec ``nexus-k tokenizer train`` reads)."""
    return Path(str(resources.files("nexus_k.core").joinpath("data", BUNDLED_KOREAN_FILE)))


def bundled_korean_text() -> str:
    """The bundled public-domain Korean text (김유정 「동백꽃」)."""
    return bundled_korean_path().read_text(encoding="utf-8")
