"""Personal data in Korean text: found, counted and replaced by a placeholder such as ``[RRN]``.

Kinds: resident and alien registration numbers, passport and driver's licence numbers, phone, card and bank
account numbers, e-mail addresses. The patterns follow the formats Korean agencies see (``900101-1234567``,
``M123A4567``, ``11-12-345678-90``, ``010-1234-5678``, ``+82 10 1234 5678``, ``4111-1111-1111-1111``,
``110-123-456789``). Registration numbers are not checked against their check digit: numbers issued since
October 2020 end in random digits. What looks like a number but is labelled as something else just before
(``주문번호``, ``사건번호``, ``송장번호``, ``사업자등록번호`` ...) is left alone; card numbers must pass the Luhn
check unless the word 카드 stands right before them; bare digit runs count as accounts only with a cue (an
account word or a payment such as 회비 or 월세 before, a transfer verb or the holder's name in parentheses after).
Hyphenated numbers shaped like the common non-personal ids (``3-4-4`` phone-like reservation numbers, ``4-4-4``
waybills and membership numbers, ``3-2-5`` business registration numbers, ``2024-123456`` year-serial numbers,
``10-2024-1234567`` patent application numbers) need the same cue; other hyphenated 10-14 digit numbers are
accounts by shape. A bare number followed by 건 (``... 건 처리됐나요?``, "the matter numbered ...") with no label
before names a matter, not a person. Spans never overlap: the earlier kind in :data:`PII_KINDS` wins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: The kinds of personal data, in the order they are looked for; keys of the counts dict.
PII_KINDS: tuple[str, ...] = ("email", "rrn", "arn", "driver_license", "passport", "card", "phone", "account")

#: Placeholder written in place of each kind.
PLACEHOLDERS: dict[str, str] = {
    "email": "[EMAIL]",
    "rrn": "[RRN]",
    "arn": "[ARN]",
    "driver_license": "[DRIVER_LICENSE]",
    "passport": "[PASSPORT]",
    "card": "[CARD]",
    "phone": "[PHONE]",
    "account": "[ACCOUNT]",
}

_SEP = r"[-. ]?"  # the separators people type between digit groups
_CONTEXT_CHARS = 16
"""How far before a number a label (``주문번호``, ``계좌``) is looked for."""

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")

# YYMMDD, then the digit for sex and century (1-4, 9, 0: citizens; 5-8: registered foreigners) and 6 more.
_REGISTRATION = re.compile(
    r"(?<![\d-])\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\s?[-–]?\s?([0-9])\d{6}(?![\d-])")

# Region (11-28, or its name) - year (2) - serial (6) - check (2).
_REGIONS = "서울|부산|경기|강원|충북|충남|전북|전남|경북|경남|제주|대구|인천|광주|대전|울산|세종"
_DRIVER = re.compile(
    r"(?<![\d-])(?:(?:1[1-9]|2[0-8])-\d{2}-\d{6}-\d{2}|(?:" + _REGIONS + r")\s?\d{2}-\d{6}-\d{2})(?![\d-])")
_DRIVER_BARE = re.compile(r"(?<!\d)(?:1[1-9]|2[0-8])\d{10}(?!\d)")

# Ordinary passports: M, S, R, O, D, G and 8 digits; since December 2021: a letter, 3 digits, a letter, 4 digits.
_PASSPORT = re.compile(r"(?<![A-Za-z0-9])(?:[MSRODG]\d{8}|[MSROD]\d{3}[A-Z]\d{4})(?![A-Za-z0-9])")

# 4-4-4-4 (Visa, Master, BC, local brands), 4-6-5 (Amex), 4-6-4 (Diners), or 14-16 bare digits.
_CARD = re.compile(
    r"(?<![\d-])(?:\d{4}([- ])\d{4}\1\d{4}\1\d{4}|\d{4}([- ])\d{6}\2\d{4,5}|\d{14,16})(?![\d-])")

# Mobile (010, 011, 016-019), Seoul 02, area codes 031-064, 070 internet phones, 050x safe numbers,
# domestic or +82 international form, and 15xx/16xx/18xx nationwide service numbers.
_PHONE = re.compile(
    r"(?<![\d+-])(?:"
    r"(?:\+82" + _SEP + r"\(?0?\)?" + _SEP + r"|0)"
    r"(?:1[016789]|2|[3-6][1-5]|70|50\d)" + _SEP + r"\d{3,4}" + _SEP + r"\d{4}"
    r"|1[568]\d{2}-\d{4}"
    r")(?![\d-])"
)

# Bank accounts: 2-4 hyphenated digit groups totalling 10-14 digits, or a bare run of 10-14 digits after a word
# that says "account" (bare runs alone are too often amounts or ids).
_ACCOUNT_GROUPED = re.compile(r"(?<![\d-])\d{2,6}(?:-\d{1,8}){1,3}(?![\d-])")
_ACCOUNT_BARE = re.compile(r"(?<![\d-])\d{10,14}(?![\d-])")

_BANKS = ("은행|국민|신한|우리|하나|농협|기업|카카오뱅크|카뱅|토스|케이뱅크|새마을|우체국|수협|신협|SC제일|씨티|"
          "부산|대구|광주|전북|경남|제주|산업")
# Payments that say the number after them is where the money goes ("이번 달 회비는 ... 으로요").
_PAYMENTS = "회비|월세|관리비|보증금|계약금|잔금|등록금|축의금|부의금|곗돈|환불|대금"
_ACCOUNT_CUE_BEFORE = re.compile(r"계좌|" + _BANKS + r"|입금|송금|이체|예금주|account|acct|" + _PAYMENTS,
                                 re.IGNORECASE)
_LABELS: dict[str, re.Pattern[str]] = {
    "account": re.compile(r"계좌|" + _BANKS + r"|입금|송금|이체|예금주|account|acct", re.IGNORECASE),
    "card": re.compile(r"카드|card", re.IGNORECASE),
    "driver_license": re.compile(r"면허"),
    "passport": re.compile(r"여권|passport", re.IGNORECASE),
}
# Words that label a number as something that is not personal data.
_NOT_PERSONAL = re.compile(
    r"주문|송장|운송장|택배|배송|접수|사건|예약|고객번호|회원번호|일련|문서|등기|관리번호|모델|제품|상품|시리얼|"
    r"거래|승인|티켓|쿠폰|청구|발주|민원번호|사업자|법인|특허|출원|품목|부품|재고|좌석|차량|학번|사번|영수증|고지서|"
    r"order|invoice|tracking|case|serial|ref", re.IGNORECASE)
# The labels that settle a number's kind, nearest first.
_ANY_LABEL = re.compile(
    r"주민|외국인|여권|면허|전화|연락|휴대|핸드폰|카드|계좌|" + _BANKS + r"|입금|송금|이체|예금주|" + _PAYMENTS + "|"
    + _NOT_PERSONAL.pattern, re.IGNORECASE)


@dataclass(frozen=True)
class PiiSpan:
    """One piece of personal data: its kind and where it is."""

    kind: str
    start: int
    end: int


def _label_before(text: str, start: int) -> str | None:
    """The label nearest before ``start`` on its line (within a few characters), if any."""
    window = text[max(0, start - _CONTEXT_CHARS) : start]
    window = window.rsplit("\n", 1)[-1]
    labels = list(_ANY_LABEL.finditer(window))
    return labels[-1].group(0) if labels else None


def _labelled_not_personal(text: str, start: int) -> bool:
    label = _label_before(text, start)
    return label is not None and _NOT_PERSONAL.fullmatch(label) is not None


def _labelled(kind: str, text: str, start: int) -> bool:
    label = _label_before(text, start)
    return label is not None and _LABELS[kind].fullmatch(label) is not None


def _luhn_ok(digits: str) -> bool:
    """True when ``digits`` passes the Luhn checksum that payment card numbers carry."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _registration_kind(m: re.Match[str], text: str) -> str | None:
    if m.group(0).isdigit() and _labelled("account", text, m.start()):
        return None  # a 13-digit account number that happens to start like a date of birth
    return "arn" if m.group(1) in "5678" else "rrn"


def _card(m: re.Match[str], text: str) -> str | None:
    if m.group(0).isdigit() and _labelled("account", text, m.start()):
        return None
    digits = _digits(m.group(0))
    if _luhn_ok(digits) or (not m.group(0).isdigit() and _labelled("card", text, m.start())):
        return "card"
    return None


_DATE_FIRST = re.compile(r"(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?:-|$)")


_YEAR = re.compile(r"(?:19|20)\d{2}")


def _id_shaped(number: str) -> bool:
    """True when hyphenated ``number`` is written like a common non-personal id (and like few accounts)."""
    groups = number.split("-")
    lengths = tuple(len(g) for g in groups)
    if lengths in ((3, 4, 4), (4, 4, 4), (3, 2, 5)):
        return True  # phone-like reservation numbers, waybills and membership numbers, business registration
    if lengths[:1] == (4,) and len(groups) == 2 and _YEAR.fullmatch(groups[0]):
        return True  # 2024-123456: a year and a serial (documents, cases, receipts)
    return lengths == (2, 4, 7) and _YEAR.fullmatch(groups[1]) is not None  # 10-2024-1234567: patent application


def _account_grouped(m: re.Match[str], text: str) -> str | None:
    number = m.group(0)
    if _DATE_FIRST.match(number):
        return None  # a date with a serial after it (2024-01-15-001)
    if not 10 <= len(_digits(number)) <= 14:
        return None
    if _id_shaped(number) and not _account_cue(m, text):
        return None
    return "account"


def _when_labelled(kind: str) -> Callable[[re.Match[str], str], str | None]:
    return lambda m, text: kind if _labelled(kind, text, m.start()) else None


# "...로 보내주세요", "...으로 입금": a transfer verb right after a bare number makes it an account.
_TRANSFER_AFTER = re.compile(r"\s?(?:으?로|에)?\s?(?:보내|보냈|보낼|송금|입금|이체)")
# "3333-01-1234567 (홍길동)", "(예금주: 김민수)": the holder's name in parentheses right after the number.
_SURNAMES = ("김이박최정강조윤장임한오서신권황안송전홍유고문양손배백허남심노하곽성차주우구민류나진지엄채원천방공현함"
             "변염여추도소석선설마길연위표명기반왕금옥육인맹제모탁국어은편용예경봉사부가복태목형피두감음빈동온호범좌팽승간상시갈")
_HOLDER_AFTER = re.compile(
    r"\s?\(\s?(?:예금주\s?:?\s?)?((?:남궁|선우|제갈|황보|독고|사공|[" + _SURNAMES + r"])[가-힣]{1,2})\s?\)")
# Words in parentheses that are not names although they start like one ("(배송중)", "(정상)", "(변경)").
_NOT_A_NAME = re.compile(
    r"(?:배송|처리|사용|조회|확인|진행|대기|발송|접수|검토|심사|승인|결제|입금|출고|반품|교환|정지|해지|신규|변경|"
    r"취소|완료|도착|정상|임시|최종|기존|본인|법인|개인|공용|미납|연체|만료|주문|예약|구매|환불|반송|도난|분실|"
    r"한도|전체|일부|상세|참고|원본|사본|수정|삭제|등록|보관|회수)(?:중|됨|완료|대기|예정|불가)?")


def _holder_after(text: str, end: int) -> bool:
    m = _HOLDER_AFTER.match(text, end)
    return m is not None and _NOT_A_NAME.fullmatch(m.group(1)) is None


def _account_cue(m: re.Match[str], text: str) -> bool:
    """An account word or a payment just before, or a transfer verb or the holder's name just after."""
    label = _label_before(text, m.start())
    if label is not None and _ACCOUNT_CUE_BEFORE.fullmatch(label):
        return True
    return _TRANSFER_AFTER.match(text, m.end()) is not None or _holder_after(text, m.end())


def _account_bare(m: re.Match[str], text: str) -> str | None:
    return "account" if _account_cue(m, text) else None


# "2303060594305 건 처리됐나요?": a bare number before 건 (a matter, an item) is the matter's id (not 건강, 건물).
_MATTER_AFTER = re.compile(r"\s?(?:번\s?)?건(?:으로|[은는이을를도의에과와만])?(?![가-힣])")


def _names_a_matter(m: re.Match[str], text: str) -> bool:
    return (m.group(0).isdigit() and _MATTER_AFTER.match(text, m.end()) is not None
            and _label_before(text, m.start()) is None)


def _always(kind: str) -> Callable[[re.Match[str], str], str | None]:
    return lambda m, text: kind


# (pattern, decide(match, text) -> kind or None, whether a "not personal" label before it vetoes it)
_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str], str], str | None], bool]] = [
    (_EMAIL, _always("email"), False),
    (_REGISTRATION, _registration_kind, True),
    (_DRIVER, _always("driver_license"), True),
    (_DRIVER_BARE, _when_labelled("driver_license"), True),
    (_PASSPORT, _always("passport"), True),
    (_CARD, _card, True),
    (_PHONE, _always("phone"), True),
    (_ACCOUNT_GROUPED, _account_grouped, True),
    (_ACCOUNT_BARE, _account_bare, True),
]


# Personal data sits around runs that start with a digit or an @. Scanning only the runs that hold an @ or
# enough digits (widened to the left for an e-mail's local part, a passport's letter, a region name before a
# licence number) keeps ordinary prose nearly free.
_RUN = re.compile(r"[0-9@][0-9A-Za-z@._%+\-–() ]*")
_LEFT = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._%+-")
_MIN_DIGITS = 7
_LEAD = 3


def _windows(text: str) -> list[tuple[int, int]]:
    windows: list[tuple[int, int]] = []
    for run in _RUN.finditer(text):
        chunk = run.group(0)
        if "@" not in chunk and sum(ch.isdigit() for ch in chunk) < _MIN_DIGITS:
            continue
        start = run.start()
        while start > 0 and text[start - 1] in _LEFT and run.start() - start < 64:
            start -= 1
        start = max(0, start - _LEAD)
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(windows[-1][1], run.end()))
        else:
            windows.append((start, run.end()))
    return windows


def find_pii(text: str) -> list[PiiSpan]:
    """Every piece of personal data in ``text``, in order, without overlaps."""
    taken: list[PiiSpan] = []
    windows = _windows(text)
    for pattern, decide, vetoable in _RULES:
        for m in (m for start, end in windows for m in pattern.finditer(text, start, end)):
            if any(m.start() < s.end and s.start < m.end() for s in taken):
                continue
            if vetoable and (_labelled_not_personal(text, m.start()) or _names_a_matter(m, text)):
                continue
            kind = decide(m, text)
            if kind is not None:
                taken.append(PiiSpan(kind, m.start(), m.end()))
    return sorted(taken, key=lambda s: s.start)


def replace_spans(text: str, spans: list[PiiSpan]) -> str:
    """``text`` with each span replaced by its kind's placeholder."""
    out, at = [], 0
    for span in spans:
        out.append(text[at : span.start])
        out.append(PLACEHOLDERS[span.kind])
        at = span.end
    out.append(text[at:])
    return "".join(out)


def count_spans(spans: list[PiiSpan]) -> dict[str, int]:
    """How many spans of each kind (every key of :data:`PII_KINDS` present)."""
    counts = dict.fromkeys(PII_KINDS, 0)
    for span in spans:
        counts[span.kind] += 1
    return counts


def redact(text: str) -> tuple[str, dict[str, int]]:
    """Replace personal data in ``text`` with placeholders; return the new text and a count per kind.

    The counts dict always has every key of :data:`PII_KINDS` (zero when nothing of that kind was found).
    """
    spans = find_pii(text)
    return replace_spans(text, spans), count_spans(spans)


def merge_counts(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """Add the counts in ``more`` into ``total`` (in place) and return ``total``."""
    for kind, n in more.items():
        total[kind] = total.get(kind, 0) + n
    return total


# Characters a piece of personal data can contain (a trailing run of them may still grow into one).
_PII_CHAR = re.compile(r"[A-Za-z0-9@._%+\-()–]")
_HOLD_MAX = 96
"""Longest tail a stream holds back (longer runs of such characters are not one number or address)."""
_LOOKAHEAD = 16
"""How many characters after a number can still change what it is (a transfer verb, ``(예금주: 홍길동)``, 건)."""
_NUMBER = re.compile(r"(?<![\d-])\d+(?:-\d+)*(?![\d-])")


# The first characters of what can follow a number and change it: a transfer verb (으로, 로, 에, 보내, 송금, 입금,
# 이체), the holder's name in parentheses, 번 건 / 건.
_CUE_STARTS = frozenset("으로에보송입이(번건")


def _waits_for_right_context(text: str, m: re.Match[str], spans: list[PiiSpan]) -> bool:
    """True when the words after the number ``m`` (not all there yet) can still decide what it is."""
    after = text[m.end() : m.end() + 2].lstrip()
    if after and after[0] not in _CUE_STARTS:
        return False  # whatever follows, no cue can start here
    number = m.group(0)
    found = any(s.start <= m.start() < s.end for s in spans)
    if number.isdigit():
        # Not found: an account cue may follow. Found: 건 may follow, unless a label before settled it.
        return 10 <= len(number) <= 16 and (not found or _label_before(text, m.start()) is None)
    return not found and _id_shaped(number) and 10 <= len(_digits(number)) <= 14


class StreamRedactor:
    """Redacts a text that arrives in pieces (a streamed answer) without letting a number split across two
    pieces slip through: the tail that could still become personal data is held back until it cannot."""

    def __init__(self) -> None:
        self.context = ""
        """The last characters already sent (a label such as 계좌 before a held-back number)."""
        self.pending = ""
        self.counts = dict.fromkeys(PII_KINDS, 0)

    def feed(self, piece: str) -> str:
        """Add ``piece``; return the redacted text that is safe to send now (maybe empty)."""
        self.pending += piece
        hold = self._held_tail()
        return self._release(len(self.pending) - hold, final=False)

    def flush(self) -> str:
        """The rest, redacted (the stream ended)."""
        return self._release(len(self.pending), final=True)

    def _held_tail(self) -> int:
        text, i = self.pending, len(self.pending)
        while i > 0 and len(self.pending) - i < _HOLD_MAX:
            ch = text[i - 1]
            if _PII_CHAR.match(ch) or (ch == " " and i >= 2 and (text[i - 2].isdigit() or text[i - 2] in "-+")):
                i -= 1
                continue
            break
        return len(text) - i

    def _release(self, cut: int, final: bool) -> str:
        if cut <= 0:
            return ""
        if "@" not in self.pending and not any(ch.isdigit() for ch in self.pending):
            out = self.pending[:cut]  # no digit, no @: nothing here can be personal data
            self.context = (self.context + out)[-_CONTEXT_CHARS:]
            self.pending = self.pending[cut:]
            return out
        base = len(self.context)
        text = self.context + self.pending
        spans = [s for s in find_pii(text) if s.end > base]
        if not final:
            # A number the next few characters can still turn into an account (or out of one) waits for them.
            for m in _NUMBER.finditer(text, max(base, len(text) - _HOLD_MAX - _LOOKAHEAD)):
                if (len(text) - m.end() < _LOOKAHEAD and m.start() - base < cut
                        and _waits_for_right_context(text, m, spans)):
                    cut = m.start() - base
                    break
        # Never cut through a span: send up to its start and keep it whole for the next round.
        for span in spans:
            if span.start - base < cut < span.end - base:
                cut = max(0, span.start - base)
        if cut <= 0:
            return ""
        inside = [PiiSpan(s.kind, s.start - base, s.end - base) for s in spans
                  if s.start >= base and s.end - base <= cut]
        out = replace_spans(self.pending[:cut], inside)
        for s in inside:
            self.counts[s.kind] += 1
        self.context = (self.context + self.pending[:cut])[-_CONTEXT_CHARS:]
        self.pending = self.pending[cut:]
        return out


def iter_kinds(counts: dict[str, int]) -> Iterator[str]:
    """The kinds with a non-zero count, in :data:`PII_KINDS` order."""
    return (kind for kind in PII_KINDS if counts.get(kind))
