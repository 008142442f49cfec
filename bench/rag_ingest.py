"""Ingestion part of ``bench.rag``: documents of every format the vector stores read, built here from licensed
Korean text (김유정 「동백꽃」, public domain; KoBEST BoolQ test passages, CC BY-SA 4.0), through the server's own
path: extraction in a child process (``extract_isolated``, as the server runs it), Korean chunking (``auto``:
800 tokens of the embedding model's tokenizer, 400 overlap) and the chunks' Kiwi terms. Embedding the chunks is
timed apart (it depends on the embedding engine, not on the format).

A page is a PDF page in the PDF built here (about ``PAGE_CHARS`` characters, NanumGothic 10 pt); for the other
formats, ``PAGE_CHARS`` characters of the same text. HWP 5.0 is left out: no library writes it and the project has
no HWP 5.0 file it may redistribute (``olefile`` only reads OLE containers).
"""

from __future__ import annotations

import csv
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

PAGE_CHARS = 1_500
FONT = Path("/usr/share/fonts/truetype/nanum/NanumGothic.ttf")
"""A Korean TrueType font for the PDF (Debian's fonts-nanum); without it the PDF row is skipped with a reason."""


def source_paragraphs(data_dir: Path) -> list[str]:
    """Paragraphs of licensed Korean prose: the short story's paragraphs, then every BoolQ test passage."""
    story = (data_dir / "literature_pd" / "kimyujeong_dongbaekkot.txt").read_text(encoding="utf-8")
    paragraphs = [line.strip() for line in story.splitlines() if len(line.strip()) > 1]
    with (data_dir / "kobest" / "BoolQ" / "test.tsv").open(encoding="utf-8", newline="") as handle:
        paragraphs += sorted({row["Text"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)})
    return paragraphs


def pages_of(paragraphs: list[str]) -> list[list[str]]:
    """Paragraphs grouped into pages of about ``PAGE_CHARS`` characters."""
    pages: list[list[str]] = [[]]
    size = 0
    for paragraph in paragraphs:
        if size >= PAGE_CHARS:
            pages.append([])
            size = 0
        pages[-1].append(paragraph)
        size += len(paragraph)
    return [p for p in pages if p]


def _table(page: list[str]) -> list[list[str]]:
    """A small table per page (the kind a regulation has): paragraph number, length, first words."""
    return [["번호", "글자 수", "첫 어절"]] + [[str(i + 1), str(len(p)), " ".join(p.split()[:3])]
                                          for i, p in enumerate(page[:4])]


def write_txt(pages: list[list[str]], path: Path) -> None:
    path.write_text("\n\n".join("\n".join(page) for page in pages), encoding="utf-8")


def write_md(pages: list[list[str]], path: Path) -> None:
    path.write_text("\n\n".join(f"## 제{n}절\n\n" + "\n\n".join(page) for n, page in enumerate(pages, start=1)),
                    encoding="utf-8")


def write_html(pages: list[list[str]], path: Path) -> None:
    body = ""
    for number, page in enumerate(pages, start=1):
        rows = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in _table(page))
        body += f"<h2>제{number}절</h2>" + "".join(f"<p>{escape(p)}</p>" for p in page) + f"<table>{rows}</table>"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>자료</title></head><body>{body}"
                    "</body></html>", encoding="utf-8")


def write_docx(pages: list[list[str]], path: Path) -> None:
    import docx

    document = docx.Document()
    for number, page in enumerate(pages, start=1):
        document.add_heading(f"제{number}절", level=2)
        for paragraph in page:
            document.add_paragraph(paragraph)
        rows = _table(page)
        table = document.add_table(rows=len(rows), cols=len(rows[0]))
        for cells, row in zip(table.rows, rows, strict=True):
            for cell, value in zip(cells.cells, row, strict=True):
                cell.text = value
    document.save(str(path))


def write_xlsx(pages: list[list[str]], path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "자료"
    sheet.append(["쪽", "문단", "본문"])
    for number, page in enumerate(pages, start=1):
        for index, paragraph in enumerate(page, start=1):
            sheet.append([number, index, paragraph])
    book.save(str(path))


def write_csv(pages: list[list[str]], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["쪽", "문단", "본문"])
        for number, page in enumerate(pages, start=1):
            writer.writerows([number, index, paragraph] for index, paragraph in enumerate(page, start=1))


def write_hwpx(pages: list[list[str]], path: Path) -> None:
    """An HWPX (OWPML) package: one section per page, paragraphs and the page's table."""
    ns = ('xmlns:hp="http://www.hancom.co.kr/hwpml/2011/paragraph" '
          'xmlns:hs="http://www.hancom.co.kr/hwpml/2011/section"')

    def para(text: str) -> str:
        return f"<hp:p><hp:run><hp:t>{escape(text)}</hp:t></hp:run></hp:p>"

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", "application/hwp+zip", compress_type=zipfile.ZIP_STORED)
        for number, page in enumerate(pages):
            rows = "".join("<hp:tr>" + "".join(f"<hp:tc><hp:subList>{para(c)}</hp:subList></hp:tc>" for c in row)
                           + "</hp:tr>" for row in _table(page))
            body = "".join(para(p) for p in page) + f"<hp:p><hp:run><hp:tbl>{rows}</hp:tbl></hp:run></hp:p>"
            archive.writestr(f"Contents/section{number}.xml",
                             f'<?xml version="1.0" encoding="UTF-8"?><hs:sec {ns}>{body}</hs:sec>')


def write_pdf(pages: list[list[str]], path: Path) -> None:
    """A PDF with a text layer (fpdf2, NanumGothic embedded); one PDF page per page where the text fits."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.add_font("NanumGothic", fname=str(FONT))
    pdf.set_font("NanumGothic", size=10)
    for page in pages:
        pdf.add_page()
        for paragraph in page:
            pdf.multi_cell(0, 5, paragraph, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
    pdf.output(str(path))


WRITERS: dict[str, Callable[[list[list[str]], Path], None]] = {
    "hwpx": write_hwpx, "pdf": write_pdf, "docx": write_docx, "txt": write_txt, "md": write_md,
    "html": write_html, "xlsx": write_xlsx, "csv": write_csv,
}


def pdf_page_count(path: Path) -> int:
    """Pages of a PDF (pypdf)."""
    from pypdf import PdfReader

    return len(PdfReader(str(path)).pages)


def missing_for(kind: str) -> str | None:
    """Why a format cannot be built on this machine, or None."""
    if kind != "pdf":
        return None
    try:
        import fpdf  # noqa: F401
    except ImportError:
        return "fpdf2 is not installed (pip install -e '.[bench]')"
    return None if FONT.is_file() else f"no Korean font at {FONT} (apt-get install fonts-nanum)"


def measure_format(kind: str, documents: list[list[list[str]]], folder: Path, tokenizer: object) -> dict:
    """Build ``documents`` (each a list of pages) in ``kind`` and ingest each as the server does; totals."""
    from serving.retrieval.chunking import chunk_text
    from serving.retrieval.ingest_base import IngestLimits
    from serving.retrieval.ingest_process import extract_isolated
    from serving.retrieval.search import search_terms

    chunk_text("가나다라 마바사. " * 40, tokenizer)  # Kiwi loaded before the clock starts
    search_terms(["가나다라 마바사."])
    totals = {"documents": 0, "pages": 0, "bytes": 0, "chars": 0, "chunks": 0, "extract_s": 0.0, "chunk_s": 0.0,
              "terms_s": 0.0}
    for number, pages in enumerate(documents):
        path = folder / f"doc{number}.{kind}"
        WRITERS[kind](pages, path)
        page_count = pdf_page_count(path) if kind == "pdf" else round(sum(map(len, (
            "".join(p) for p in pages))) / PAGE_CHARS, 2)
        started = time.perf_counter()
        text = extract_isolated(path, path.name, IngestLimits(), 300)
        extracted = time.perf_counter()
        chunks = chunk_text(text, tokenizer)
        chunked = time.perf_counter()
        search_terms(chunks)
        done = time.perf_counter()
        totals["documents"] += 1
        totals["pages"] += page_count
        totals["bytes"] += path.stat().st_size
        totals["chars"] += len(text)
        totals["chunks"] += len(chunks)
        totals["extract_s"] += extracted - started
        totals["chunk_s"] += chunked - extracted
        totals["terms_s"] += done - chunked
    seconds = totals["extract_s"] + totals["chunk_s"] + totals["terms_s"]
    out = {k: round(v, 2) if isinstance(v, float) else v for k, v in totals.items()}
    out["seconds"] = round(seconds, 2)
    out["chars_per_s"] = round(totals["chars"] / seconds)
    out["pages_per_s"] = round(totals["pages"] / seconds, 2)
    return out


def sample_chunks(documents: list[list[list[str]]], tokenizer: object, count: int) -> list[str]:
    """The first ``count`` chunks of the plain-text documents (what embedding is timed on)."""
    from serving.retrieval.chunking import chunk_text

    out: list[str] = []
    for pages in documents:
        out += chunk_text("\n".join("\n".join(p) for p in pages), tokenizer)
        if len(out) >= count:
            break
    return out[:count]

