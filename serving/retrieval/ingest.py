"""Text out of the documents offices keep: TXT/Markdown, HTML, PDF, DOCX, HWPX, HWP 5.0, CSV and XLSX.

``extract_text(path, filename, limits)`` returns the document as plain text, one paragraph (or table row) per
line, headings kept as lines of their own (``# ...`` for HTML and DOCX headings); a file it cannot read raises
:class:`IngestError` with a reason a person can act on, never anything else. Hostile inputs are bounded:

- the extension must agree with the content (a ``.pdf`` must start like a PDF, a ``.docx`` must be a zip ...);
- zip containers (DOCX, XLSX, HWPX) are refused when their members would inflate beyond
  ``limits.max_uncompressed_bytes`` in total or any member beyond ``limits.max_ratio`` times its compressed size
  (``zipfile`` stops reading a member at its declared size, so the declared sizes bound the real work);
- HWP sections are inflated with a bounded ``zlib`` decompressor;
- the text is bounded by ``limits.max_chars`` in total and ``limits.max_page_chars`` per PDF page.

Pure functions, blocking: the server runs them in a worker thread, off the request path.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable
from html.parser import HTMLParser
from pathlib import Path

from serving.retrieval.ingest_base import (
    OLE_MAGIC,
    PDF_MAGIC,
    ZIP_MAGIC,
    IngestError,
    IngestLimits,
    _Text,
    open_zip,
)


def _decode(data: bytes, what: str) -> str:
    """Bytes as text: UTF-8 (with or without BOM), UTF-16 with BOM, or CP949 (older Korean files)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    if b"\x00" in data[:65_536]:
        raise IngestError(f"{what} is binary, not text", "unsupported_file")
    for encoding in ("utf-8-sig", "cp949"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise IngestError(f"{what} is neither UTF-8 nor CP949 text", "unsupported_file")


def _read(path: Path, limits: IngestLimits) -> bytes:
    size = path.stat().st_size
    if size > limits.max_uncompressed_bytes:
        raise IngestError(f"the file has {size:,} bytes, more than {limits.max_uncompressed_bytes:,}")
    return path.read_bytes()


# ------------------------------------------------------------------------------------------- plain text


def text_from_plain(path: Path, limits: IngestLimits) -> str:
    """TXT and Markdown (and unknown extensions that hold text)."""
    out = _Text(limits)
    for line in _decode(_read(path, limits), "the file").splitlines():
        out.add(line)
    return out.text()


def _rows_text(rows: Iterable[Iterable[object]], out: _Text) -> None:
    for row in rows:
        cells = ["" if cell is None else str(cell).replace("\n", " ").strip() for cell in row]
        while cells and not cells[-1]:
            cells.pop()
        if any(cells):
            out.add(" | ".join(cells))


def text_from_csv(path: Path, limits: IngestLimits) -> str:
    """A CSV (or TSV) as a text table: one row per line, cells joined by `` | ``."""
    text = _decode(_read(path, limits), "the file")
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",\t;")
    except csv.Error:
        dialect = csv.excel
    out = _Text(limits)
    try:
        _rows_text(csv.reader(io.StringIO(text), dialect), out)
    except csv.Error as err:
        raise IngestError(f"the CSV file is malformed: {err}") from None
    return out.text()


# ----------------------------------------------------------------------------------------------- HTML

_BLOCK_TAGS = frozenset({"p", "div", "br", "li", "tr", "table", "section", "article", "header", "footer", "ul", "ol",
                         "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "dt", "dd", "hr", "title"})
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "head"})


class _HTMLText(HTMLParser):
    def __init__(self, out: _Text) -> None:
        super().__init__(convert_charrefs=True)
        self.out = out
        self.line: list[str] = []
        self.skip = 0
        self.cells: list[str] | None = None

    def flush(self) -> None:
        self.out.add(re.sub(r"\s+", " ", "".join(self.line)))
        self.line = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag in ("td", "th") and self.cells is not None:
            self.flush_cell()
        elif tag in _BLOCK_TAGS:
            self.flush()
            if tag == "tr":
                self.cells = []
            if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                self.line.append("#" * int(tag[1]) + " ")

    def flush_cell(self) -> None:
        if self.cells is not None and self.line:
            self.cells.append(re.sub(r"\s+", " ", "".join(self.line)).strip())
            self.line = []

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in ("td", "th"):
            self.flush_cell()
        elif tag == "tr" and self.cells is not None:
            self.flush_cell()
            self.out.add(" | ".join(self.cells))
            self.cells = None
        elif tag in _BLOCK_TAGS:
            self.flush()

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.line.append(data)


def text_from_html(path: Path, limits: IngestLimits) -> str:
    """HTML: visible text, block elements as lines, headings as ``#`` lines, table rows as text rows."""
    out = _Text(limits)
    parser = _HTMLText(out)
    parser.feed(_decode(_read(path, limits), "the HTML file"))
    parser.close()
    parser.flush()
    return out.text()


# ------------------------------------------------------------------------------------------------ PDF


def text_from_pdf(path: Path, limits: IngestLimits) -> str:
    """PDF text with ``pypdf``, page by page (encrypted PDFs only with an empty password)."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    with path.open("rb") as head:
        if not head.read(1024).lstrip().startswith(PDF_MAGIC):
            raise IngestError("the file is named .pdf but is not a PDF", "unsupported_file")
    out = _Text(limits)
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise IngestError("the PDF is encrypted with a password")
        count = len(reader.pages)
        if count > limits.max_pages:
            raise IngestError(f"the PDF has {count:,} pages, more than {limits.max_pages:,}")
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            if len(text) > limits.max_page_chars:
                raise IngestError(f"page {number} holds more than {limits.max_page_chars:,} characters")
            for line in text.splitlines():
                out.add(line)
    except IngestError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, AssertionError,
            RecursionError, OSError, NotImplementedError) as err:
        raise IngestError(f"the PDF could not be read: {type(err).__name__}: {err}"[:500]) from None
    if not out.lines:
        raise IngestError("the PDF holds no extractable text (a scan without a text layer?)")
    return out.text()


# ------------------------------------------------------------------------------------------ zip (OOXML)


def text_from_docx(path: Path, limits: IngestLimits) -> str:
    """DOCX with ``python-docx``: paragraphs and tables in document order, headings as ``#`` lines."""
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    open_zip(path, limits, "docx").close()
    try:
        document = docx.Document(str(path))
    except Exception as err:  # python-docx raises many kinds (KeyError for a missing part, lxml errors ...)
        raise IngestError(f"the DOCX file could not be read: {type(err).__name__}: {err}"[:500]) from None
    out = _Text(limits)
    body = document.element.body
    for child in body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = Paragraph(child, document)
            style = (paragraph.style.name if paragraph.style is not None else "") or ""
            level = re.match(r"Heading (\d)", style)
            prefix = "#" * int(level.group(1)) + " " if level else ""
            out.add(prefix + paragraph.text if paragraph.text.strip() else "")
        elif tag == "tbl":
            table = Table(child, document)
            _rows_text(([cell.text for cell in row.cells] for row in table.rows), out)
    return out.text()


def text_from_xlsx(path: Path, limits: IngestLimits) -> str:
    """XLSX with ``openpyxl`` (values, not formulas): each sheet a ``#`` heading and its rows as text rows."""
    import openpyxl

    open_zip(path, limits, "xlsx").close()
    try:
        book = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises many kinds for a broken workbook
        raise IngestError(f"the XLSX file could not be read: {type(err).__name__}: {err}"[:500]) from None
    out = _Text(limits)
    try:
        for sheet in book.worksheets:
            out.add(f"# {sheet.title}")
            _rows_text(sheet.iter_rows(values_only=True), out)
    finally:
        book.close()
    return out.text()


# ------------------------------------------------------------------------------------------- dispatch

Extractor = Callable[[Path, IngestLimits], str]


def _extractors() -> dict[str, Extractor]:
    from serving.retrieval.ingest_hwp import text_from_hwp, text_from_hwpx

    return {
        "txt": text_from_plain, "md": text_from_plain, "markdown": text_from_plain, "text": text_from_plain,
        "html": text_from_html, "htm": text_from_html, "xhtml": text_from_html,
        "pdf": text_from_pdf, "docx": text_from_docx, "xlsx": text_from_xlsx,
        "csv": text_from_csv, "tsv": text_from_csv, "hwpx": text_from_hwpx, "hwp": text_from_hwp,
    }


UNSUPPORTED = frozenset({"doc", "xls", "ppt", "pptx", "png", "jpg", "jpeg", "gif", "zip", "exe", "mp3", "mp4"})
"""Extensions refused outright (binary formats no extractor here reads)."""


def file_kind(filename: str) -> str:
    """The lower-case extension of ``filename`` (``""`` without one)."""
    suffix = Path(filename).suffix.lower().lstrip(".")
    return suffix


def extract_text(path: Path, filename: str, limits: IngestLimits | None = None) -> str:
    """The text of the stored file ``path`` uploaded as ``filename``; :class:`IngestError` when it cannot be
    read (any other failure of a library is reported as one, too)."""
    limits = limits or IngestLimits()
    kind = file_kind(filename)
    if kind in UNSUPPORTED:
        raise IngestError(f".{kind} files are not supported (convert to PDF, DOCX, HWPX or text)", "unsupported_file")
    extractor = _extractors().get(kind)
    if extractor is None:
        with path.open("rb") as head:
            start = head.read(8)
        if start.startswith((PDF_MAGIC, ZIP_MAGIC, OLE_MAGIC)):
            raise IngestError(f"the file type of {filename!r} is not known from its name: name it .pdf, .docx, "
                              ".xlsx, .hwp or .hwpx", "unsupported_file")
        extractor = text_from_plain
    try:
        text = extractor(path, limits)
    except IngestError:
        raise
    except MemoryError:
        raise IngestError("the document needs more memory than the server gives one file") from None
    except RecursionError:
        raise IngestError("the document is nested too deeply") from None
    except Exception as err:  # a library's own failure on a broken file: a reason, not a crash
        raise IngestError(f"the .{kind or 'txt'} file could not be read: {type(err).__name__}: {err}"[:500]) from None
    if not text.strip():
        raise IngestError("the document holds no text")
    return text

