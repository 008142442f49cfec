"""Personal data in Korean text: found, counted and replaced by a placeholder such as ``[RRN]``.

Kinds: resident and alien registration numbers, passport and driver's licence numbers, phone, card and bank
account numbers, e-mail addresses. The patterns follow the formats Korean agencies see (``900101-1234567``,
``M123A4567``, ``11-12-345678-90``, ``010-1234-5678``, ``+82 10 1234 5678``, ``4111-1111-1111-1111``,
``110-123-456789``). Registration numbers are not checked against their check digit: numbers issued since
October 2020 end in random digits. What looks like a number but is labelled as something else just before
(``주문번호``, ``사건번호``, ``송장번호``, ``사업자등록번호`` ...) is left alone; card numbers must pass the Luhn
check unless the word 카드 stands right before them; bare digit runs count as accounts only after a word
that says so. Spans never overlap: the earlier kind in :data:`PII_KINDS` wins.
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
_LABELS: dict[str, re.Pattern[str]] = {
    "account": re.compile(r"계좌|" + _BANKS + r"|입금|송금|이체|예금주|account|acct", re.IGNORECASE),
    "card": re.compile(r"카드|card", re.IGNORECASE),
    "driver_license": re.compile(r"면허"),
    "passport": re.compile(r"여권|passport", re.IGNORECASE),
}
# Words that label a number as something that is not personal data.
_NOT_PERSONAL = re.compile(
    r"주문|송장|운송장|택배|배송|접수|사건|예약|고객번호|회원번호|일련|문서|등기|관리번호|모델|제품|상품|시리얼|"
    r"거래|승인|티켓|쿠폰|청구|발주|민원번호|사업자|법인|특허|출원|품목|부품|재고|좌석|차량|학번|사번|"
    r"order|invoice|tracking|case|serial|ref", re.IGNORECASE)
# The labels that settle a number's kind, nearest first.
_ANY_LABEL = re.compile(
    r"주민|외국인|여권|면허|전화|연락|휴대|핸드폰|카드|계좌|" + _BANKS + r"|입금|송금|이체|예금주|"
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


def _account_grouped(m: re.Match[str], text: str) -> str | None:
    if _DATE_FIRST.match(m.group(0)):
        return None  # a date with a serial after it (2024-01-15-001)
    return "account" if 10 <= len(_digits(m.group(0))) <= 14 else None


def _when_labelled(kind: str) -> Callable[[re.Match[str], str], str | None]:
    return lambda m, text: kind if _labelled(kind, text, m.start()) else None


# "...로 보내주세요", "...으로 입금": a transfer verb right after a bare number makes it an account.
_TRANSFER_AFTER = re.compile(r"\s?(?:으?로|에)?\s?(?:보내|송금|입금|이체)")


def _account_bare(m: re.Match[str], text: str) -> str | None:
    if _labelled("account", text, m.start()) or _TRANSFER_AFTER.match(text, m.end()):
        return "account"
    return None


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
            if vetoable and _labelled_not_personal(text, m.start()):
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
        return self._release(len(self.pending) - hold)

    def flush(self) -> str:
        """The rest, redacted (the stream ended)."""
        return self._release(len(self.pending))

    def _held_tail(self) -> int:
        text, i = self.pending, len(self.pending)
        while i > 0 and len(self.pending) - i < _HOLD_MAX:
            ch = text[i - 1]
            if _PII_CHAR.match(ch) or (ch == " " and i >= 2 and (text[i - 2].isdigit() or text[i - 2] in "-+")):
                i -= 1
                continue
            break
        return len(text) - i

    def _release(self, cut: int) -> str:
        if cut <= 0:
            return ""
        if "@" not in self.pending and not any(ch.isdigit() for ch in self.pending):
            out = self.pending[:cut]  # no digit, no @: nothing here can be personal data
            self.context = (self.context + out)[-_CONTEXT_CHARS:]
            self.pending = self.pending[cut:]
            return out
        base = len(self.context)
        spans = [s for s in find_pii(self.context + self.pending) if s.end > base]
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
