"""Text of 한글 (Hancom) documents: HWPX (OWPML: a zip of XML) and HWP 5.0 (an OLE compound file of records).

HWPX: ``Contents/section0.xml``, ``section1.xml`` ... hold paragraphs (``hp:p``) whose runs (``hp:run``) hold text
(``hp:t``) and tables (``hp:tbl`` -> ``hp:tr`` -> ``hp:tc``); a table becomes one text row per table row.

HWP 5.0 (Hancom's published format, revision 1.3): the ``FileHeader`` stream says whether the body is
compressed (raw deflate) or encrypted; each ``BodyText/SectionN`` stream is a sequence of records with a 32-bit
header (tag: 10 bits, level: 10 bits, size: 12 bits, 0xFFF meaning a 32-bit size follows) and the
``HWPTAG_PARA_TEXT`` records hold a paragraph's text as UTF-16LE, in which code units below 32 are controls:
most (tables, footnotes, fields, tabs) take 8 code units, the rest one. The OLE container is read with
``olefile``; no extractor on PyPI is both maintained and permissively licensed, so the records are read here.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

from serving.retrieval.ingest_base import OLE_MAGIC, IngestError, IngestLimits, _Text, open_zip

HWPTAG_BEGIN = 0x10
HWPTAG_PARA_TEXT = HWPTAG_BEGIN + 51
"""The record holding a paragraph's characters."""
CHAR_CONTROLS = frozenset({0, 10, 13, *range(24, 32)})
"""Control characters one code unit long; every other code unit below 32 is an 8-unit inline/extended control."""
_SECTION = re.compile(r"^Contents/section(\d+)\.xml$")


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


# ------------------------------------------------------------------------------------------------ HWPX


def _cell_text(cell: ElementTree.Element) -> str:
    parts = []
    for element in cell.iter():
        if _local(element.tag) == "t":
            parts.append("".join(element.itertext()))
        elif _local(element.tag) == "p" and parts and not parts[-1].endswith(" "):
            parts.append(" ")
    return re.sub(r"\s+", " ", "".join(parts)).strip()


def _table(table: ElementTree.Element, out: _Text) -> None:
    for row in table.iter():
        if _local(row.tag) == "tr":
            cells = [_cell_text(cell) for cell in row if _local(cell.tag) == "tc"]
            if any(cells):
                out.add(" | ".join(cells))


def _paragraph(paragraph: ElementTree.Element, out: _Text) -> None:
    parts: list[str] = []
    tables: list[ElementTree.Element] = []
    for run in paragraph:
        if _local(run.tag) != "run":
            continue
        for item in run:
            kind = _local(item.tag)
            if kind == "t":
                parts.append("".join(item.itertext()))
            elif kind == "tbl":
                tables.append(item)
    out.add("".join(parts))
    for table in tables:
        _table(table, out)


def _walk(element: ElementTree.Element, out: _Text) -> None:
    for child in element:
        kind = _local(child.tag)
        if kind == "p":
            _paragraph(child, out)
        elif kind == "tbl":
            _table(child, out)
        else:
            _walk(child, out)


def section_xml_text(data: bytes, out: _Text) -> None:
    """Add the paragraphs of one HWPX section's XML to ``out`` (DTDs refused: no entity expansion)."""
    head = data[:4096]
    if b"<!DOCTYPE" in head or b"<!ENTITY" in data:
        raise IngestError("the HWPX section declares a DTD or entities, which are not accepted")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as err:
        raise IngestError(f"a section of the HWPX file is not valid XML: {err}") from None
    _walk(root, out)


def text_from_hwpx(path: Path, limits: IngestLimits) -> str:
    """HWPX: every ``Contents/sectionN.xml`` in order."""
    with open_zip(path, limits, "hwpx") as archive:
        names = {info.filename for info in archive.infolist()}
        if "mimetype" in names:
            mimetype = archive.read("mimetype")[:100].strip()
            if mimetype not in (b"application/hwp+zip", b"application/haansofthwpx"):
                raise IngestError(f"the file is named .hwpx but its mimetype is {mimetype.decode('latin-1')!r}",
                                  "unsupported_file")
        sections = sorted((int(m.group(1)), name) for name in names if (m := _SECTION.match(name)))
        if not sections:
            raise IngestError("the file is named .hwpx but holds no Contents/section0.xml", "unsupported_file")
        out = _Text(limits)
        for _, name in sections:
            section_xml_text(archive.read(name), out)
    return out.text()


# --------------------------------------------------------------------------------------------- HWP 5.0


def records(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """The records of a (decompressed) HWP stream: (tag id, level, payload)."""
    pos, end = 0, len(data)
    while pos + 4 <= end:
        header = int.from_bytes(data[pos:pos + 4], "little")
        pos += 4
        tag, level, size = header & 0x3FF, (header >> 10) & 0x3FF, header >> 20
        if size == 0xFFF:
            if pos + 4 > end:
                raise IngestError("the HWP body ends inside a record header")
            size = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        if pos + size > end:
            raise IngestError("the HWP body ends inside a record (a truncated or damaged file)")
        yield tag, level, data[pos:pos + size]
        pos += size


def para_text(payload: bytes) -> str:
    """The characters of a ``HWPTAG_PARA_TEXT`` record, controls dropped (tab and line break kept)."""
    units = [int.from_bytes(payload[i:i + 2], "little") for i in range(0, len(payload) - 1, 2)]
    kept = bytearray()
    i = 0
    while i < len(units):
        unit = units[i]
        if unit >= 32:
            kept += unit.to_bytes(2, "little")
            i += 1
        elif unit in CHAR_CONTROLS:
            replacement = {10: "\n", 24: "-", 30: " ", 31: " "}.get(unit)
            if replacement:
                kept += replacement.encode("utf-16-le")
            i += 1
        else:
            if unit == 9:
                kept += "\t".encode("utf-16-le")
            i += 8
    return kept.decode("utf-16-le", "replace")


def inflate(data: bytes, budget: int, limits: IngestLimits) -> bytes:
    """Raw-deflate ``data`` to at most ``budget`` bytes and ``limits.max_ratio`` times its size."""
    allowed = min(budget, max(1_000_000, int(limits.max_ratio * len(data))))
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(data, allowed + 1)
    except zlib.error as err:
        raise IngestError(f"an HWP section is not valid compressed data: {err}") from None
    if len(out) > allowed:
        raise IngestError(f"an HWP section inflates beyond {allowed:,} bytes (a decompression bomb?)")
    return out


def section_text(data: bytes, compressed: bool, out: _Text, budget: int, limits: IngestLimits) -> int:
    """Add the paragraphs of one ``BodyText/SectionN`` stream to ``out``; returns the bytes it inflated to."""
    body = inflate(data, budget, limits) if compressed else data
    for tag, _, payload in records(body):
        if tag == HWPTAG_PARA_TEXT:
            for line in para_text(payload).split("\n"):
                out.add(line)
    return len(body)


def text_from_hwp(path: Path, limits: IngestLimits) -> str:
    """HWP 5.0 through ``olefile``: the file header's flags, then every body section in order."""
    import olefile

    with path.open("rb") as head:
        start = head.read(8)
    if start != OLE_MAGIC:
        if start.startswith(b"PK"):
            raise IngestError("the file is named .hwp but is an HWPX (zip) document: name it .hwpx",
                              "unsupported_file")
        raise IngestError("the file is named .hwp but is not an HWP 5.0 document", "unsupported_file")
    try:
        ole = olefile.OleFileIO(str(path))
    except Exception as err:  # olefile raises OSError and its own errors on damaged containers
        raise IngestError(f"the HWP container is damaged: {err}") from None
    with ole:
        if not ole.exists("FileHeader"):
            raise IngestError("the OLE file has no HWP FileHeader: it is not an HWP 5.0 document", "unsupported_file")
        header = ole.openstream("FileHeader").read(256)
        if not header.startswith(b"HWP Document File"):
            raise IngestError("the FileHeader is not an HWP 5.0 signature", "unsupported_file")
        flags = int.from_bytes(header[36:40], "little")
        if flags & 0x2:
            raise IngestError("the HWP document is protected by a password")
        if flags & 0x4:
            raise IngestError("the HWP document is a distribution copy (배포용 문서): its text is encrypted")
        compressed = bool(flags & 0x1)
        sections = sorted((int(entry[1][7:]), entry) for entry in ole.listdir()
                          if len(entry) == 2 and entry[0] == "BodyText" and re.fullmatch(r"Section\d+", entry[1]))
        if not sections:
            raise IngestError("the HWP document has no body sections")
        out = _Text(limits)
        budget = limits.max_uncompressed_bytes
        for _, entry in sections:
            if ole.get_size("/".join(entry)) > limits.max_uncompressed_bytes:
                raise IngestError("an HWP section is larger than the server accepts")
            budget -= section_text(ole.openstream(entry).read(), compressed, out, budget, limits)
    return out.text()
