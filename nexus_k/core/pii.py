"""Personal-data redaction for Korean text: resident registration numbers, phone numbers, e-mail
addresses, card numbers and bank account numbers are replaced by a placeholder such as ``[RRN]``.

The patterns favour recall on the formats Korean agencies actually see (``900101-1234567``,
``010-1234-5678``, ``02-123-4567``, ``+82 10 1234 5678``, ``1234-5678-9012-3456``, ``110-123-456789``)
while leaving dates, amounts and ordinary numbers alone. Redaction runs kind by kind in a fixed order
(e-mail, RRN, card, phone, account) so that a number is counted once, under its most specific kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: The kinds of personal data we redact, in the order they are applied; keys of the counts dict.
PII_KINDS: tuple[str, ...] = ("email", "rrn", "card", "phone", "account")

#: Placeholder written in place of each kind.
PLACEHOLDERS: dict[str, str] = {
    "email": "[EMAIL]",
    "rrn": "[RRN]",
    "card": "[CARD]",
    "phone": "[PHONE]",
    "account": "[ACCOUNT]",
}

_SEP = r"[-. ]?"  # the separators people type between digit groups

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")

# YYMMDD, then the sex/century digit (1-4 citizens, 5-8 registered foreigners) and six more digits.
_RRN = re.compile(r"(?<!\d)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\s?[-–]?\s?[1-8]\d{6}(?!\d)")

# 4-4-4-4 (Visa, Master, BC, local brands) or 4-6-5 (Amex) with separators, or 15-16 bare digits that
# pass the Luhn check (bare digit runs that fail it are left to the account rule).
_CARD_GROUPED = re.compile(r"(?<!\d)(?:\d{4}[- ]\d{4}[- ]\d{4}[- ]\d{4}|\d{4}[- ]\d{6}[- ]\d{5})(?!\d)")
_CARD_BARE = re.compile(r"(?<!\d)\d{15,16}(?!\d)")

# Mobile (010, 011, 016-019), Seoul 02, area codes 031-064, 070 internet phones, 050x safe numbers,
# domestic or +82 international form, and 15xx/16xx/18xx nationwide service numbers.
_PHONE = re.compile(
    r"(?<![\d+])(?:"
    r"(?:\+82" + _SEP + r"\(?0?\)?" + _SEP + r"|0)"
    r"(?:1[016789]|2|[3-6][1-5]|70|50\d)" + _SEP + r"\d{3,4}" + _SEP + r"\d{4}"
    r"|1[568]\d{2}-\d{4}"
    r")(?!\d)"
)

# Bank account numbers: 2-4 hyphenated digit groups totalling 10-14 digits, or a bare run of 10-14
# digits right after a word that says "account" (bare runs alone are too often amounts or IDs).
_ACCOUNT_GROUPED = re.compile(r"(?<![\d-])\d{2,6}(?:-\d{1,8}){1,3}(?![\d-])")
_ACCOUNT_KEYWORD = re.compile(
    r"((?:계좌|계좌번호|입금|송금|account|acct)[^\d\n]{0,12})(\d{10,14})(?!\d)", re.IGNORECASE
)


def _luhn_ok(digits: str) -> bool:
    """True when ``digits`` passes the Luhn checksum that payment card numbers carry."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digit_count(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def _sub(
    pattern: re.Pattern[str],
    kind: str,
    text: str,
    counts: dict[str, int],
    accept: Callable[[re.Match[str]], bool] | None = None,
) -> str:
    def replace(match: re.Match[str]) -> str:
        if accept is not None and not accept(match):
            return match.group(0)
        counts[kind] += 1
        return PLACEHOLDERS[kind]

    return pattern.sub(replace, text)


def redact(text: str) -> tuple[str, dict[str, int]]:
    """Replace personal data in ``text`` with placeholders; return the new text and a count per kind.

    The counts dict always has every key of :data:`PII_KINDS` (zero when nothing of that kind was found).
    """
    counts = dict.fromkeys(PII_KINDS, 0)
    text = _sub(_EMAIL, "email", text, counts)
    text = _sub(_RRN, "rrn", text, counts)
    text = _sub(_CARD_GROUPED, "card", text, counts)
    text = _sub(_CARD_BARE, "card", text, counts, accept=lambda m: _luhn_ok(m.group(0)))
    text = _sub(_PHONE, "phone", text, counts)
    text = _sub(_ACCOUNT_GROUPED, "account", text, counts, accept=lambda m: 10 <= _digit_count(m.group(0)) <= 14)

    def replace_keyword(match: re.Match[str]) -> str:
        counts["account"] += 1
        return match.group(1) + PLACEHOLDERS["account"]

    text = _ACCOUNT_KEYWORD.sub(replace_keyword, text)
    return text, counts


def merge_counts(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """Add the counts in ``more`` into ``total`` (in place) and return ``total``."""
    for kind, n in more.items():
        total[kind] = total.get(kind, 0) + n
    return total
