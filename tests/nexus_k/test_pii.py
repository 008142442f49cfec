"""Personal-data redaction: each kind in its common Korean formats, counts, and things left alone."""

from __future__ import annotations

import re

import pytest

from nexus_k.core.pii import PII_KINDS, StreamRedactor, merge_counts, redact


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("주민등록번호 900101-1234567 입니다", "rrn"),
        ("주민번호: 0302154123456", "rrn"),
        ("새 번호 201015-3847261", "rrn"),  # issued after October 2020: random last digits
        ("외국인등록번호 851231-5123456", "arn"),
        ("여권번호 M12345678 로 예약", "passport"),
        ("새 여권 M123A4567", "passport"),
        ("운전면허 11-12-345678-90", "driver_license"),
        ("면허번호 서울 12-345678-90", "driver_license"),
        ("운전면허번호 111234567890", "driver_license"),
        ("연락처 010-1234-5678 로 주세요", "phone"),
        ("휴대폰 01098765432", "phone"),
        ("대표번호 02-123-4567", "phone"),
        ("경기 031.987.6543", "phone"),
        ("해외에서는 +82 10 1234 5678 로", "phone"),
        ("+82-2-3456-7890", "phone"),
        ("고객센터 1588-1234", "phone"),
        ("메일은 hong.gildong@korea.go.kr 로", "email"),
        ("문의: a_b+tag@mail.example.co.kr", "email"),
        ("카드 1234-5678-9012-3456 결제", "card"),
        ("카드번호 4111 1111 1111 1111", "card"),
        ("아멕스 3782-822463-10005", "card"),
        ("4111111111111111 로 결제", "card"),
        ("국민은행 123456-01-234567 으로 입금", "account"),
        ("신한 110-123-456789", "account"),
        ("계좌번호: 12345678901234", "account"),
        ("입금 계좌 3333012345678", "account"),
    ],
)
def test_each_kind_is_redacted_and_counted(text: str, kind: str) -> None:
    redacted, counts = redact(text)
    assert counts[kind] == 1, (redacted, counts)
    assert sum(counts.values()) == 1, (redacted, counts)
    assert f"[{kind.upper()}]" in redacted
    assert re.search(r"\d{3}", redacted) is None, redacted


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-15에 회의가 있습니다.",
        "예산은 1,500,000원이고 3년 계획입니다.",
        "제12조 3항에 따라 45명이 참석",
        "전화는 나중에 드리겠습니다.",
        "버전 1.2.3 을 쓰세요",
        "주문번호 20240115",
        "1234567890123456 은 임의의 숫자입니다",  # 16 digits failing Luhn, no account keyword
        "주문번호 4111111111111111 확인",  # Luhn-valid, but labelled as an order
        "사건번호 2023가합12345, 접수번호 2401151234567",
        "사업자등록번호 123-45-67890",
        "송장번호 6012-3456-7890",
        "2024.01.15 14:30 회의, 2024-01-15-001 문서",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    redacted, counts = redact(text)
    assert redacted == text
    assert sum(counts.values()) == 0


def test_many_items_in_one_text_and_all_keys_present() -> None:
    text = (
        "홍길동(900101-1234567)의 연락처는 010-1111-2222, 사무실 02-333-4444, "
        "메일 hong@example.com, 카드 1234-5678-9012-3456, 계좌 110-123-456789 입니다."
    )
    redacted, counts = redact(text)
    assert counts == {**dict.fromkeys(PII_KINDS, 0), "email": 1, "rrn": 1, "card": 1, "phone": 2, "account": 1}
    assert set(counts) == set(PII_KINDS)
    for digits in ("900101", "1111", "333", "hong@", "9012", "456789"):
        assert digits not in redacted
    assert redacted.startswith("홍길동([RRN])의 연락처는 [PHONE], 사무실 [PHONE]")


def test_redaction_is_idempotent() -> None:
    once, _ = redact("연락처 010-1234-5678, 메일 a@b.kr")
    twice, counts = redact(once)
    assert twice == once
    assert sum(counts.values()) == 0


def test_merge_counts_adds_in_place() -> None:
    total = dict.fromkeys(PII_KINDS, 0)
    merge_counts(total, redact("010-1234-5678 과 010-9999-8888")[1])
    merge_counts(total, redact("a@b.kr")[1])
    assert total["phone"] == 2
    assert total["email"] == 1


@pytest.mark.parametrize("cut_every", [1, 2, 3, 5, 7])
def test_stream_redactor_masks_across_piece_boundaries(cut_every: int) -> None:
    text = "연락처는 010-1234-5678 이고 메일 kim@example.go.kr, 계좌 110-123-456789 입니다. 주문번호 20240115"
    stream = StreamRedactor()
    out = "".join(stream.feed(text[i : i + cut_every]) for i in range(0, len(text), cut_every)) + stream.flush()
    assert out == redact(text)[0]
    assert stream.counts["phone"] == 1 and stream.counts["email"] == 1 and stream.counts["account"] == 1


def test_stream_redactor_sends_plain_text_at_once() -> None:
    stream = StreamRedactor()
    assert stream.feed("안녕하세요. ") == "안녕하세요. "
    assert stream.feed("번호는 010-") == "번호는 "  # the number may still grow: held back
    assert stream.feed("1234-5678") == ""
    assert stream.feed("입니다") == "[PHONE]입니다"


@pytest.mark.parametrize(
    "text",
    [
        "6945-2180-2256 조회해 주세요.",  # 4-4-4 waybill or membership number, nothing says account
        "535-5728-4790 확인 부탁드립니다.",  # 3-4-4: a phone-like reservation number
        "308-5668-4252번으로 예약 변경 부탁드려요.",
        "(주)한빛상사 123-45-67890 대표 홍길동",  # business registration number without its label
        "2024-123456호 공문을 참고하세요.",  # a year and a serial
        "10-2024-1234567 건 심사 결과 안내",  # a patent application number
        "6310-9256-6862 (배송중)",  # a status in parentheses is not the holder's name
        "2303060594305 건 처리됐나요?",  # a bare number before 건 is the matter's id, not a registration number
        "2504104558043763 건 처리됐나요?",  # ... nor a card (Luhn-valid)
        "393265862882번 건은 어떻게 됐나요?",
        "회비 납부 영수증 005288642048",  # a payment word, but the nearest label says receipt
    ],
)
def test_id_shaped_and_matter_numbers_are_left_alone(text: str) -> None:
    redacted, counts = redact(text)
    assert redacted == text, redacted
    assert sum(counts.values()) == 0


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("6945-2180-2256 (예금주 홍길동)", "6945-2180-2256"),  # 토스뱅크-like 4-4-4 with its holder
        ("5727-1721-7369 (김민수)", "5727-1721-7369"),
        ("18669764516239 (김민수)", "18669764516239"),
        ("이번 달 회비는 077677318201 으로요.", "077677318201"),  # a payment before
        ("보증금 반환은 9629-9563-2717 으로 해 주세요.", "9629-9563-2717"),
        ("12345678901234으로 보냈어요.", "12345678901234"),  # past tense of the transfer verb
        ("신한 535-5728-4790", "535-5728-4790"),  # any shape after a bank name
        ("691-611784-70288 로 부탁드립니다", "691-611784-70288"),  # a bank's shape needs no cue
    ],
)
def test_accounts_marked_by_the_words_around_them(text: str, number: str) -> None:
    redacted, counts = redact(text)
    assert counts["account"] == 1 and sum(counts.values()) == 1, (redacted, counts)
    assert number not in redacted and "[ACCOUNT]" in redacted


def test_matter_after_a_registration_number_needs_no_label_before() -> None:
    assert redact("주민번호 6412232443023 건으로 문의드립니다.")[1]["rrn"] == 1  # the label wins over 건
    assert redact("6102261201288 건강보험 자격을 확인해 주세요.")[1]["rrn"] == 1  # 건강 is not 건


@pytest.mark.parametrize("cut_every", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize(
    "text",
    [
        "이체는 6945-2180-2256 (예금주 홍길동) 으로 부탁해요, 송장 6945-2180-2257 (배송중)",
        "잔액은 12345678901234으로 보냈어요. 그리고 2303060594305 건 처리됐나요?",
        "5727-1721-7369 (김민수)",
        "18669764516239 로 입금",
    ],
)
def test_stream_redactor_waits_for_the_words_after_a_number(text: str, cut_every: int) -> None:
    stream = StreamRedactor()
    out = "".join(stream.feed(text[i : i + cut_every]) for i in range(0, len(text), cut_every)) + stream.flush()
    redacted, counts = redact(text)
    assert out == redacted
    assert stream.counts == counts
    assert counts["account"] >= 1
