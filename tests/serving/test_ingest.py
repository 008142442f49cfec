"""Document ingestion (text out of every format, hostile files refused with a reason) and Korean chunking.

Fixtures are made here: DOCX with python-docx, XLSX with openpyxl, PDF by hand (a one-page PDF with a text
layer), HWPX with zipfile. ``olefile`` cannot write OLE files, so HWP 5.0 is tested on its record parser and
section decoder with bytes built here, and the ``.hwp`` reader on files that are not HWP.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import pytest

from serving.retrieval.chunking import chunk_text, heading_level, units_of
from serving.retrieval.ingest import extract_text
from serving.retrieval.ingest_base import IngestError, IngestLimits, _Text
from serving.retrieval.ingest_hwp import HWPTAG_PARA_TEXT, para_text, records, section_text

REGULATION = """# 복무 규정
제1조(목적) 이 규정은 직원의 복무에 관한 사항을 정한다.
제2조(연차휴가)
1. 직원은 1년에 15일의 연차휴가를 쓸 수 있다.
2. 연차휴가는 부서장의 승인을 받아야 한다.
가. 긴급한 경우에는 사후에 승인을 받을 수 있다.
"""


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def make_pdf(text: str) -> bytes:
    """A one-page PDF whose text layer is ``text`` (ASCII, Helvetica), with a correct xref table."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def make_hwpx(paragraphs: list[str], table: list[list[str]] | None = None) -> bytes:
    """An HWPX (OWPML) package: mimetype, a section of paragraphs and optionally a table."""
    ns = ('xmlns:hp="http://www.hancom.co.kr/hwpml/2011/paragraph" '
          'xmlns:hs="http://www.hancom.co.kr/hwpml/2011/section"')
    body = "".join(f"<hp:p><hp:run><hp:t>{p}</hp:t></hp:run></hp:p>" for p in paragraphs)
    if table:
        rows = "".join("<hp:tr>" + "".join(f"<hp:tc><hp:subList><hp:p><hp:run><hp:t>{c}</hp:t></hp:run></hp:p>"
                                           "</hp:subList></hp:tc>" for c in row) + "</hp:tr>" for row in table)
        body += f"<hp:p><hp:run><hp:tbl>{rows}</hp:tbl></hp:run></hp:p>"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", "application/hwp+zip", compress_type=zipfile.ZIP_STORED)
        archive.writestr("Contents/section0.xml", f'<?xml version="1.0" encoding="UTF-8"?><hs:sec {ns}>{body}</hs:sec>')
    return buffer.getvalue()


def hwp_record(tag: int, payload: bytes, level: int = 0) -> bytes:
    size = len(payload)
    if size >= 0xFFF:
        return (tag | level << 10 | 0xFFF << 20).to_bytes(4, "little") + size.to_bytes(4, "little") + payload
    return (tag | level << 10 | size << 20).to_bytes(4, "little") + payload


def test_text_markdown_csv_html(tmp_path: Path) -> None:
    assert extract_text(write(tmp_path, "a.md", REGULATION.encode()), "규정.md").startswith("# 복무 규정\n제1조")
    assert extract_text(write(tmp_path, "b.txt", "연차휴가 15일".encode("cp949")), "b.txt") == "연차휴가 15일"
    csv_text = extract_text(write(tmp_path, "c.csv", "이름,휴가\n김철수,15\n".encode()), "c.csv")
    assert csv_text == "이름 | 휴가\n김철수 | 15"
    html = ("<html><head><title>x</title><script>var a=1;</script></head><body><h2>제2조 휴가</h2>"
            "<p>직원은 <b>15일</b>을 쓴다.</p><table><tr><td>구분</td><td>일수</td></tr></table></body></html>")
    assert extract_text(write(tmp_path, "d.html", html.encode()), "d.html") == \
        "## 제2조 휴가\n직원은 15일을 쓴다.\n구분 | 일수"


def test_docx_xlsx_pdf_hwpx(tmp_path: Path) -> None:
    import docx
    import openpyxl

    document = docx.Document()
    document.add_heading("복무 규정", level=1)
    document.add_paragraph("제1조(목적) 이 규정은 직원의 복무를 정한다.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "연차", "15일"
    document.save(tmp_path / "a.docx")
    assert extract_text(tmp_path / "a.docx", "a.docx") == \
        "# 복무 규정\n제1조(목적) 이 규정은 직원의 복무를 정한다.\n연차 | 15일"

    book = openpyxl.Workbook()
    book.active.title = "휴가"
    book.active.append(["이름", "일수"])
    book.active.append(["김철수", 15])
    book.save(tmp_path / "b.xlsx")
    assert extract_text(tmp_path / "b.xlsx", "b.xlsx") == "# 휴가\n이름 | 일수\n김철수 | 15"

    pdf = write(tmp_path, "c.pdf", make_pdf("Annual leave is 15 days"))
    assert extract_text(pdf, "c.pdf") == "Annual leave is 15 days"

    hwpx = write(tmp_path, "d.hwpx", make_hwpx(["제1조(목적) 복무를 정한다.", "제2조 휴가는 15일이다."],
                                               [["구분", "일수"], ["연차", "15"]]))
    assert extract_text(hwpx, "규정.hwpx") == \
        "제1조(목적) 복무를 정한다.\n제2조 휴가는 15일이다.\n구분 | 일수\n연차 | 15"


def test_hwp_records_and_paragraph_text() -> None:
    # "제1조" + a tab (an 8-unit inline control) + "휴가" + a table control (8 units, extended) + paragraph end.
    units = "제1조".encode("utf-16-le") + (9).to_bytes(2, "little") + b"\x00" * 14 + "휴가".encode("utf-16-le")
    units += (11).to_bytes(2, "little") + b"tbl " + b"\x00" * 10 + (13).to_bytes(2, "little")
    assert para_text(units) == "제1조\t휴가"
    long_text = ("가" * 3000).encode("utf-16-le")  # a record over 4095 bytes uses the extended size field
    body = hwp_record(0x42, b"\x00" * 22) + hwp_record(HWPTAG_PARA_TEXT, units, 1) + \
        hwp_record(HWPTAG_PARA_TEXT, long_text, 1)
    assert [(tag, level) for tag, level, _ in records(body)] == [(0x42, 0), (HWPTAG_PARA_TEXT, 1),
                                                                  (HWPTAG_PARA_TEXT, 1)]
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    compressed = deflate.compress(body) + deflate.flush()
    out = _Text(IngestLimits())
    assert section_text(compressed, True, out, 10**9, IngestLimits()) == len(body)
    assert out.lines == ["제1조\t휴가", "가" * 3000]
    with pytest.raises(IngestError, match="truncated"):
        list(records(body[:-10]))
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = bomb.compress(b"\x00" * 50_000_000) + bomb.flush()
    with pytest.raises(IngestError, match="bomb"):
        section_text(data, True, _Text(IngestLimits()), 10**9, IngestLimits())


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ntrailer <<>>\n%%EOF", "PDF"),
    ("fake.pdf", b"hello, not a pdf", "not a PDF"),
    ("fake.hwpx", b"just text pretending", "not a HWPX"),
    ("fake.hwp", b"PK\x03\x04 zip named hwp", "HWPX"),
    ("fake.hwp", b"plain text named hwp", "not an HWP"),
    ("fake.docx", b"%PDF-1.4 named docx", "not a DOCX"),
    ("binary.txt", b"\x00\x01\x02\x03" * 100, "binary"),
    ("photo.png", b"\x89PNG\r\n", "not supported"),
    ("empty.txt", b"   \n", "no text"),
])
def test_broken_and_mislabelled_files_get_a_reason(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    with pytest.raises(IngestError, match=reason):
        extract_text(write(tmp_path, name, data), name)


def test_zip_bombs_and_huge_text_are_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", "application/hwp+zip")
        archive.writestr("Contents/section0.xml", b"<a>" + b" " * 60_000_000 + b"</a>")
    bomb = write(tmp_path, "bomb.hwpx", buffer.getvalue())
    assert bomb.stat().st_size < 200_000
    with pytest.raises(IngestError, match="zip bomb"):
        extract_text(bomb, "bomb.hwpx")
    with pytest.raises(IngestError, match="zip bomb"):
        extract_text(bomb, "bomb.hwpx", IngestLimits(max_uncompressed_bytes=10_000_000))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Contents/section0.xml", '<!DOCTYPE a [<!ENTITY x "xxxxxxxx">]><a>&x;&x;</a>')
    with pytest.raises(IngestError, match="DTD"):
        extract_text(write(tmp_path, "dtd.hwpx", buffer.getvalue()), "dtd.hwpx")
    with pytest.raises(IngestError, match="characters"):
        extract_text(write(tmp_path, "big.txt", ("가나다라 " * 1000 + "\n").encode() * 10), "big.txt",
                     IngestLimits(max_chars=20_000))


def test_headings_and_sentences() -> None:
    lines = ["# 규정", "제2장 복무", "제5조(연차휴가)", "1. 총칙", "가. 예외", "제5조(연차휴가) 직원은 15일을 쓴다.",
             "그냥 문장이다."]
    assert [heading_level(x) for x in lines] == [1, 1, 3, 4, 5, None, None]
    units = units_of(REGULATION)
    assert units[0].heading == 1 and units[2].heading == 3
    assert units[3].text.startswith("1. 직원은") and units[3].path == ("# 복무 규정", "제2조(연차휴가)")


def test_chunks_fit_the_token_budget_and_keep_headings_with_their_text(tiny_tokenizer) -> None:
    articles = "\n".join(f"제{n}조(조항{n}) 이 조항은 {n}번째 규칙을 정한다. 직원은 규칙 {n}을 지켜야 한다."
                         for n in range(1, 30))
    text = "# 인사 규정\n" + articles
    chunks = chunk_text(text, tiny_tokenizer, max_tokens=120, overlap_tokens=30)
    assert len(chunks) > 3
    for chunk in chunks:
        assert len(tiny_tokenizer(chunk, add_special_tokens=False).input_ids) <= 120 + 5
        assert not chunk.rstrip().splitlines()[-1].startswith("#")  # no chunk ends with a heading
    assert all(chunk.startswith("# 인사 규정") for chunk in chunks)  # every chunk says where it comes from
    joined = "\n".join(chunks)
    assert all(f"제{n}조(조항{n})" in joined for n in range(1, 30))
    # A long paragraph is split at sentence boundaries, with overlap between chunks.
    paragraph = " ".join(f"{n}번 문장은 휴가에 관한 설명이다." for n in range(1, 60))
    pieces = chunk_text(paragraph, tiny_tokenizer, max_tokens=80, overlap_tokens=20)
    assert len(pieces) > 2 and all(p.endswith("설명이다.") for p in pieces)
    assert pieces[1].split(" ")[0] in pieces[0]  # the next chunk starts with the previous one's last sentence(s)
    # One unit longer than a chunk is cut on token boundaries.
    assert len(chunk_text("가" * 2000, tiny_tokenizer, max_tokens=100, overlap_tokens=0)) > 1


def test_fuzzed_documents_give_text_or_a_reason(tmp_path: Path) -> None:
    """Truncated and byte-flipped copies of valid documents: every one gives text or an IngestError, nothing
    else (a library's own exception, a hang) escapes."""
    import random
    import time

    import docx
    import openpyxl

    document = docx.Document()
    document.add_paragraph("제1조(목적) 이 규정은 직원의 복무를 정한다.")
    document.save(tmp_path / "seed.docx")
    book = openpyxl.Workbook()
    book.active.append(["이름", "일수"])
    book.save(tmp_path / "seed.xlsx")
    seeds = {"pdf": make_pdf("Annual leave is 15 days"), "docx": (tmp_path / "seed.docx").read_bytes(),
             "xlsx": (tmp_path / "seed.xlsx").read_bytes(), "hwpx": make_hwpx(["제1조 휴가", "제2조 병가"]),
             "html": "<h1>제목</h1><p>본문 <b>굵게</b></p><table><tr><td>a</td></tr></table>".encode(),
             "csv": "이름,일수\n김철수,15\n".encode(), "hwp": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)}
    rng = random.Random(19)
    outcomes = {"text": 0, "reason": 0}
    for kind, seed in seeds.items():
        for attempt in range(25):
            data = bytearray(seed)
            if attempt % 3 == 0:
                data = data[: rng.randrange(1, len(data))]
            for _ in range(rng.randrange(1, 12)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            path = write(tmp_path, f"fuzz{attempt}.{kind}", bytes(data))
            start = time.monotonic()
            try:
                assert isinstance(extract_text(path, path.name), str)
                outcomes["text"] += 1
            except IngestError as err:
                assert err.message and err.code in ("invalid_file", "unsupported_file")
                outcomes["reason"] += 1
            assert time.monotonic() - start < 10, (kind, attempt)
    assert outcomes["reason"] > 20 and sum(outcomes.values()) == 25 * len(seeds)


def test_extraction_in_a_child_process(tmp_path: Path) -> None:
    from serving.retrieval.ingest_process import extract_isolated

    path = write(tmp_path, "a.md", REGULATION.encode())
    assert extract_isolated(path, "a.md", IngestLimits(), 60) == extract_text(path, "a.md")
    with pytest.raises(IngestError, match="not a PDF"):
        extract_isolated(write(tmp_path, "b.pdf", b"nope"), "b.pdf", IngestLimits(), 60)
    with pytest.raises(IngestError, match="longer than"):  # the child cannot even start in a millisecond
        extract_isolated(path, "a.md", IngestLimits(), 0.001)


def test_tables_stay_whole_where_they_fit(tiny_tokenizer) -> None:
    intro = " ".join(f"{n}번 설명 문장이다." for n in range(1, 12))
    table = "\n".join(f"항목{n} | {n * 10}일 | 비고{n}" for n in range(1, 6))
    chunks = chunk_text(f"# 휴가표\n{intro}\n{table}\n끝맺는 문장이다.", tiny_tokenizer, max_tokens=150,
                        overlap_tokens=0)
    holding = [c for c in chunks if "항목1 |" in c]
    assert len(holding) == 1 and all(f"항목{n} |" in holding[0] for n in range(1, 6))
    huge = "\n".join(f"항목{n} | {n * 10}일 | 비고{n}" for n in range(1, 80))
    assert len(chunk_text(huge, tiny_tokenizer, max_tokens=150, overlap_tokens=0)) > 1  # too big: row by row
