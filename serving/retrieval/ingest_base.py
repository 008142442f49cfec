"""What every text extractor shares: the file signatures, the error a file that cannot be read gets, the
bounds on the work one file may cause, the bounded line collector and the checked zip opener."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

PDF_MAGIC = b"%PDF-"
ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


class IngestError(Exception):
    """A file that cannot be turned into text: ``code`` is OpenAI's ``last_error.code`` (``unsupported_file``
    or ``invalid_file``), the message says why."""

    def __init__(self, message: str, code: str = "invalid_file") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class IngestLimits:
    """Bounds on the work one file may cause."""

    max_chars: int = 20_000_000
    """Most characters of text taken from one file."""
    max_page_chars: int = 500_000
    """Most characters on one PDF page (a page beyond it is refused, not cut)."""
    max_uncompressed_bytes: int = 512 * 1024 * 1024
    """Most bytes a container (zip members, HWP sections) may inflate to in total."""
    max_ratio: float = 200.0
    """Most inflation of one compressed member (uncompressed / compressed bytes)."""
    max_pages: int = 10_000
    """Most pages of a PDF."""


class _Text:
    """Lines collected under the character limit."""

    def __init__(self, limits: IngestLimits) -> None:
        self.limits = limits
        self.lines: list[str] = []
        self.chars = 0

    def add(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        self.chars += len(line) + 1
        if self.chars > self.limits.max_chars:
            raise IngestError(f"the document has more than {self.limits.max_chars:,} characters of text")
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines)



def open_zip(path: Path, limits: IngestLimits, kind: str) -> zipfile.ZipFile:
    """The zip container, after checking it is one and that it cannot inflate beyond the limits."""
    with path.open("rb") as head:
        if head.read(4) != ZIP_MAGIC:
            raise IngestError(f"the file is named .{kind} but is not a {kind.upper()} (zip) document",
                              "unsupported_file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise IngestError(f"the {kind.upper()} file is a damaged zip archive: {err}") from None
    infos = archive.infolist()
    if len(infos) > 10_000:
        raise IngestError(f"the {kind.upper()} archive has {len(infos):,} members (a zip bomb?)")
    total = sum(info.file_size for info in infos)
    if total > limits.max_uncompressed_bytes:
        raise IngestError(f"the {kind.upper()} archive would inflate to {total:,} bytes, more than "
                          f"{limits.max_uncompressed_bytes:,} (a zip bomb?)")
    for info in infos:
        if info.file_size > 1_000_000 and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise IngestError(f"member {info.filename!r} of the {kind.upper()} archive inflates "
                              f"{info.file_size / max(info.compress_size, 1):,.0f} times (a zip bomb?)")
    return archive
