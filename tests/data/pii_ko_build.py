"""Builds ``pii_ko.jsonl``: Korean sentences labelled with the personal data in them, and hard negatives (dates,
order, invoice and case numbers, business ids, phone-like ids) that hold none.

    python -m tests.data.pii_ko_build      # rewrites tests/data/pii_ko.jsonl (seeded: the same file each time)

Each line: ``{"text": ..., "pii": [{"kind": ..., "value": ...}], "group": "positive" | "negative" |
"unlabelled"}`` (unlabelled: numbers with no word saying what they are, personal or not). Values are
made up (random digits; registration numbers with valid dates and random last digits, cards with a valid Luhn
digit) and the sentences are written as agencies, banks and shops write them: labelled and unlabelled, with
spaces, dots and hyphens, several items in one sentence.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).with_name("pii_ko.jsonl")
SEED = 20260120
R = random.Random(SEED)


def digits(n: int) -> str:
    return "".join(R.choice("0123456789") for _ in range(n))


def birth(foreign: bool = False) -> str:
    year = R.randint(1940, 2019)
    month, day = R.randint(1, 12), R.randint(1, 28)
    century = 0 if year < 2000 else 2
    sex = R.choice((1, 2)) + century + (4 if foreign else 0)
    front = f"{year % 100:02d}{month:02d}{day:02d}"
    back = f"{sex}{digits(6)}"
    style = R.random()
    if style < 0.75:
        return f"{front}-{back}"
    if style < 0.9:
        return front + back
    return f"{front} - {back}"


def rrn() -> str:
    return birth()


def arn() -> str:
    return birth(foreign=True)


def passport() -> str:
    if R.random() < 0.5:
        return R.choice("MSR") + digits(8)
    return R.choice("MS") + digits(3) + R.choice("ABCDEFGHJK") + digits(4)


REGIONS = ["서울", "부산", "경기", "강원", "충북", "충남", "전북", "전남", "경북", "경남", "제주", "대구", "인천",
           "광주", "대전", "울산"]
AREA_CODES = ["31", "32", "33", "41", "42", "43", "51", "52", "53", "54", "55", "61", "62", "63", "64"]


def driver() -> str:
    if R.random() < 0.6:
        return f"{R.randint(11, 28)}-{digits(2)}-{digits(6)}-{digits(2)}"
    return f"{R.choice(REGIONS)} {digits(2)}-{digits(6)}-{digits(2)}"


def phone() -> str:
    style = R.random()
    if style < 0.4:
        return f"010-{digits(4)}-{digits(4)}"
    if style < 0.5:
        return f"010{digits(8)}"
    if style < 0.6:
        return f"02-{digits(R.choice((3, 4)))}-{digits(4)}"
    if style < 0.72:
        return f"0{R.choice(AREA_CODES)}-{digits(3)}-{digits(4)}"
    if style < 0.8:
        return f"070-{digits(4)}-{digits(4)}"
    if style < 0.88:
        return f"+82 10 {digits(4)} {digits(4)}"
    if style < 0.94:
        return f"{R.choice(['1588', '1577', '1644', '1899'])}-{digits(4)}"
    return f"010.{digits(4)}.{digits(4)}"


def luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def card() -> str:
    if R.random() < 0.15:
        number = luhn_complete(R.choice(["34", "37"]) + digits(12))
        return f"{number[:4]}-{number[4:10]}-{number[10:]}"
    prefix = R.choice(["4", "5", "9410", "6250"])
    number = luhn_complete(prefix + digits(15 - len(prefix)))
    style = R.random()
    if style < 0.6:
        return "-".join(number[i : i + 4] for i in range(0, 16, 4))
    if style < 0.85:
        return " ".join(number[i : i + 4] for i in range(0, 16, 4))
    return number


BANK_FORMATS = [("국민은행", (6, 2, 6)), ("신한은행", (3, 3, 6)), ("우리은행", (4, 3, 6)), ("하나은행", (3, 6, 5)),
                ("농협", (3, 4, 4, 2)), ("기업은행", (3, 6, 2, 3)), ("카카오뱅크", (4, 2, 7)), ("우체국", (6, 2, 6)),
                ("새마을금고", (4, 4, 4)), ("토스뱅크", (4, 4, 4))]


def account() -> tuple[str, str]:
    bank, groups = R.choice(BANK_FORMATS)
    value = "-".join(digits(n) for n in groups)
    if R.random() < 0.2:
        value = value.replace("-", "")
    return bank, value


NAMES = ["kim", "lee.sy", "park_jh", "choi99", "jung.minsu", "hong.gildong", "yoon-ah", "seo.k", "han2024"]
DOMAINS = ["naver.com", "gmail.com", "daum.net", "korea.kr", "seoul.go.kr", "mois.go.kr", "snu.ac.kr",
           "company.co.kr"]


def email() -> str:
    return f"{R.choice(NAMES)}@{R.choice(DOMAINS)}"


PERSONS = ["홍길동", "김민수", "이서연", "박지훈", "최유진", "정다은", "강현우", "윤서아"]

# (kind, value maker, templates); {v} is the value, {p} a person's name.
TEMPLATES: list[tuple[str, Callable[[], str], list[str]]] = [
    ("rrn", rrn, [
        "신청인 {p}의 주민등록번호는 {v}입니다.", "주민번호 {v} 확인 부탁드립니다.", "{p} / {v} / 서울특별시 종로구",
        "본인 확인을 위해 주민등록번호({v})를 입력하세요.", "주민등록번호: {v}", "성명 {p}, 생년월일 및 번호 {v}",
        "아이 주민번호가 {v} 맞나요?", "{v} 번호로 조회했는데 결과가 없습니다.", "등본상 번호는 {v}로 되어 있어요.",
        "환자 {p}({v})의 진료 기록을 요청합니다.",
    ]),
    ("arn", arn, [
        "외국인등록번호 {v}로 체류기간 연장을 신청합니다.", "등록번호 {v}, 국적 베트남", "외국인 근로자 {p} ({v})",
        "외국인등록증 번호는 {v}입니다.", "{v} 번호의 체류자격을 확인해 주세요.",
    ]),
    ("passport", passport, [
        "여권번호 {v}로 항공권을 예약했습니다.", "여권 번호: {v} (만료일 2030.05.01)",
        "{p}님 여권 {v} 사본을 첨부합니다.",
        "신규 여권({v}) 발급이 완료되었습니다.", "passport no. {v}", "출국 심사 때 {v} 여권을 제시했어요.",
    ]),
    ("driver_license", driver, [
        "운전면허번호 {v}로 본인 인증을 했습니다.", "면허번호: {v}", "{p}의 운전면허증({v})이 정지되었습니다.",
        "운전면허 {v} 적성검사 기간입니다.", "면허 {v} 갱신 안내",
    ]),
    ("phone", phone, [
        "연락처는 {v}입니다.", "{v}로 전화 주세요.", "담당자 {p} ({v})", "휴대폰 번호 {v}로 인증번호를 보냈습니다.",
        "문의: {v} (평일 9시~18시)", "고객센터 {v}", "{p} 주무관 연락처 {v}, 내선 없음", "번호 바뀌었어요 {v}",
        "긴급 시 {v}으로 연락 바랍니다.", "팩스 대신 {v}로 문자 주세요.",
    ]),
    ("card", card, [
        "카드번호 {v}로 결제했습니다.", "결제 카드: {v}", "{v} 카드가 분실되어 정지 요청합니다.",
        "신용카드 {v} 유효기간 12/27", "법인카드({v}) 사용 내역을 보내주세요.", "{v} 로 자동이체 등록",
        "체크카드 번호 {v} 맞는지 확인 부탁해요.",
    ]),
    ("email", email, [
        "메일은 {v}로 보내주세요.", "담당자 이메일: {v}", "{p} <{v}>", "회신은 {v} 으로 부탁드립니다.",
        "계정 {v}의 비밀번호를 초기화했습니다.", "문의사항은 {v}에 남겨 주세요.",
    ]),
]
ACCOUNT_TEMPLATES = [
    "{b} {v}로 입금해 주세요.", "환불 계좌: {b} {v} (예금주 {p})", "계좌번호 {v} ({b})", "{b} 계좌 {v}로 송금했습니다.",
    "보증금은 {b} {v} 으로 이체 바랍니다.", "급여 계좌를 {b} {v}로 변경합니다.", "{p} {b} {v}",
]

NEGATIVES = [
    "회의는 {d1}에 열립니다.", "접수일: {d2}, 처리기한: {d1}", "{d3} 기준 인구는 {n1}명입니다.",
    "주문번호 {o1} 배송이 시작되었습니다.", "주문번호: {o2}", "운송장번호 {t1}로 조회하세요.", "송장번호 {t2}",
    "사건번호 {c1} 판결문을 요청합니다.", "{c1} 사건의 변론기일은 {d1}입니다.", "사업자등록번호 {b1}",
    "법인등록번호 {b2}", "예약번호 {r1} 확인되었습니다.", "접수번호 {r2}로 민원이 접수되었습니다.",
    "고객번호 {r3} 회원님, 안녕하세요.", "회원번호 {r4}", "예산 {n2}원이 배정되었습니다.",
    "제{n3}조 제{n4}항에 따라 처리합니다.", "버전 {v1}로 업데이트하세요.", "우편번호 {z1}, 세종특별자치시 도움6로 11",
    "서버 주소는 192.168.{n4}.{n3}입니다.", "모델명 {m1} 제품의 리콜 안내", "제품번호 {m2}", "부품 코드 {m3}",
    "{d4} 14:30:00 로그인 기록", "좌석번호 {n3}A, 편명 KE{n5}", "학번 {s1} 학생의 성적", "사번 {s2}",
    "ISBN {i1}", "특허 출원번호 {p1}", "문서번호 {r5}에 따라 시행합니다.", "거래번호 {o2} 승인 완료",
    "승인번호 {n6}", "관리번호 {r2}", "{d2}부터 {d1}까지 휴관합니다.", "원주율은 약 3.14159입니다.",
    "좌표 37.5665, 126.9780 부근", "등기번호 {t3} 우편물이 도착했습니다.", "청구번호 {o1}",
    "이번 분기 매출은 {n7}원입니다.", "{n8}번 버스를 타세요.",
]


# Added with the id-shape and right-context rules of the finder (appended, so the rows above stay as they were):
# numbers written like waybills, reservation, business, year-serial and patent numbers with no label; 건 after a
# number; a payment word before a label that says "receipt"; a status word in parentheses.
MORE_NEGATIVES = [
    "(주)한빛상사 {b1} 대표 {p}", "{b1} 명의로 세금계산서를 발행해 주세요.", "{t1} (배송중)",
    "{r4} 번으로 적립해 주세요.", "{r1}번으로 예약 변경 부탁드려요.", "{r2}호 공문을 참고하세요.",
    "{p1} 건 심사 결과 안내", "{o2} 건 환불 처리 부탁드립니다.", "회비 납부 영수증 {t2}", "관리비 고지서 번호 {t3}",
    "{t2}번 건은 어떻게 됐나요?", "{t1}, {r1} 두 건 모두 확인 부탁드립니다.",
]
# Accounts in the waybill-like 4-4-4 shape (토스뱅크, 새마을금고) and others that only the words around them mark:
# a payment before, a transfer verb or the holder's name after; and registration numbers next to 건.
MORE_ACCOUNT_TEMPLATES = [
    "{w} (예금주 {p})", "{w} ({p})", "보증금 반환은 {w} 으로 해 주세요.", "월세는 {v} 로 부탁해요.",
    "{v}으로 보냈어요.", "{v} ({p}) 앞으로 부탁드립니다.",
]
MORE_RRN_TEMPLATES = ["{r} 건강보험 자격을 확인해 주세요.", "주민번호 {r} 건으로 문의드립니다."]


def negative_values() -> dict[str, str]:
    y, m, d = R.randint(2015, 2026), R.randint(1, 12), R.randint(1, 28)
    return {
        "d1": f"{y}-{m:02d}-{d:02d}", "d2": f"{y}.{m:02d}.{d:02d}", "d3": f"{y}년 {m}월 {d}일",
        "d4": f"{y}-{m:02d}-{d:02d}",
        "n1": f"{R.randint(1, 999):,}{R.randint(100, 999)},{R.randint(100, 999)}",
        "n2": f"{R.randint(1, 99)},{R.randint(100, 999)},{R.randint(100, 999)},000", "n3": str(R.randint(1, 99)),
        "n4": str(R.randint(1, 20)), "n5": str(R.randint(100, 999)), "n6": digits(8),
        "n7": f"{R.randint(1, 999)},{R.randint(100, 999)},{R.randint(100, 999)},{R.randint(100, 999)}",
        "n8": str(R.randint(100, 9999)),
        "o1": f"{y}{m:02d}{d:02d}-{digits(7)}", "o2": f"{y % 100:02d}{m:02d}{d:02d}{digits(R.choice((7, 8, 10)))}",
        "t1": f"{digits(4)}-{digits(4)}-{digits(4)}", "t2": digits(12), "t3": digits(13),
        "c1": f"{y}{R.choice(['가합', '고단', '나', '구합', '드'])}{digits(5)}",
        "b1": f"{digits(3)}-{digits(2)}-{digits(5)}", "b2": f"{digits(6)}-{digits(7)}",
        "r1": f"{digits(3)}-{digits(4)}-{digits(4)}", "r2": f"{y}-{digits(6)}", "r3": f"010{digits(7)}",
        "r4": f"{digits(4)}-{digits(4)}-{digits(4)}", "r5": f"{digits(3)}-{digits(4)}-{digits(3)}",
        "v1": f"{R.randint(1, 9)}.{R.randint(0, 20)}.{R.randint(0, 30)}", "z1": digits(5),
        "m1": f"SM-{R.choice('GAS')}{digits(3)}N", "m2": f"M{digits(8)}", "m3": f"R{digits(8)}",
        "s1": f"{y}{digits(5)}", "s2": f"{digits(2)}-{digits(6)}",
        "i1": f"978-89-{digits(4)}-{digits(3)}-{digits(1)}", "p1": f"10-{y}-{digits(7)}",
    }


def build() -> list[dict]:
    """The labelled sentences (the same on every call)."""
    R.seed(SEED)
    rows: list[dict] = []
    for kind, make, templates in TEMPLATES:
        for i in range(60):
            value = make()
            text = templates[i % len(templates)].format(v=value, p=R.choice(PERSONS))
            rows.append({"text": text, "pii": [{"kind": kind, "value": value}], "group": "positive"})
    for i in range(60):
        bank, value = account()
        text = ACCOUNT_TEMPLATES[i % len(ACCOUNT_TEMPLATES)].format(b=bank, v=value, p=R.choice(PERSONS))
        rows.append({"text": text, "pii": [{"kind": "account", "value": value}], "group": "positive"})
    for _ in range(40):  # several kinds in one message, as in a complaint form
        p, ph, em, rr = R.choice(PERSONS), phone(), email(), rrn()
        bank, acct = account()
        text = f"성명: {p}\n주민등록번호: {rr}\n연락처: {ph}\n이메일: {em}\n환불계좌: {bank} {acct}"
        rows.append({"text": text, "pii": [{"kind": "rrn", "value": rr}, {"kind": "phone", "value": ph},
                                           {"kind": "email", "value": em}, {"kind": "account", "value": acct}],
                     "group": "positive"})
    # Unlabelled items, as people also write them: numbers with no word saying what they are.
    for i in range(15):
        bank, value = account()
        value = value if i % 3 else value.replace("-", "")
        template = ["{v}로 보내주세요.", "이번 달 회비는 {v} 으로요.", "{v} ({p})"][i % 3]
        text = template.format(v=value, p=R.choice(PERSONS))
        rows.append({"text": text, "pii": [{"kind": "account", "value": value}], "group": "unlabelled"})
    for i in range(15):
        values = negative_values()
        text = ["{t1} 조회해 주세요.", "{o2} 건 처리됐나요?", "{r1} 확인 부탁드립니다."][i % 3].format(**values)
        rows.append({"text": text, "pii": [], "group": "unlabelled"})
    for i in range(len(NEGATIVES) * 6):
        text = NEGATIVES[i % len(NEGATIVES)].format(**negative_values())
        rows.append({"text": text, "pii": [], "group": "negative"})
    for i in range(len(MORE_NEGATIVES) * 6):
        text = MORE_NEGATIVES[i % len(MORE_NEGATIVES)].format(**negative_values(), p=R.choice(PERSONS))
        rows.append({"text": text, "pii": [], "group": "negative"})
    for i in range(len(MORE_ACCOUNT_TEMPLATES) * 6):
        template = MORE_ACCOUNT_TEMPLATES[i % len(MORE_ACCOUNT_TEMPLATES)]
        value = f"{R.randint(1000, 9999)}-{digits(4)}-{digits(4)}" if "{w}" in template else account()[1]
        text = template.format(w=value, v=value, p=R.choice(PERSONS))
        rows.append({"text": text, "pii": [{"kind": "account", "value": value}], "group": "unlabelled"})
    for i in range(len(MORE_RRN_TEMPLATES) * 6):
        value = rrn()
        text = MORE_RRN_TEMPLATES[i % len(MORE_RRN_TEMPLATES)].format(r=value)
        rows.append({"text": text, "pii": [{"kind": "rrn", "value": value}], "group": "positive"})
    return rows


if __name__ == "__main__":
    with OUT.open("w", encoding="utf-8") as f:
        for row in build():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")
