"""Speech level of Korean answers from Kiwi's morpheme tags: which share of sentence endings (EF) are
합쇼체 (formal polite), 해요체 (informal polite) or 반말 (plain/informal), and how much is Korean at all."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

LEVELS = ("hapsyo", "haeyo", "banmal")
"""Speech levels in results.json: 합쇼체, 해요체, 반말."""

# Kiwi writes the ㅂ of -ㅂ니다 as a final-consonant jamo (U+11B8); both spellings are accepted.
_HAPSYO = re.compile(r"(?:[\u11b8ㅂ]|습)(?:니다|니까|시다|시오)$|십시오$")
_HAEYO = re.compile(r"(?:요|죠)$")
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_LETTER = re.compile(r"[^\W\d_]")


@lru_cache(maxsize=1)
def _kiwi():
    from kiwipiepy import Kiwi

    return Kiwi()


def ending_level(form: str, followed_by_yo: bool = False) -> str:
    """Speech level of one sentence-final ending (Kiwi tag EF); a trailing particle 요 makes it 해요체."""
    form = unicodedata.normalize("NFC", form)
    if _HAPSYO.search(unicodedata.normalize("NFD", form)) or _HAPSYO.search(form):
        return "hapsyo"
    if followed_by_yo or _HAEYO.search(form):
        return "haeyo"
    return "banmal"


def sentence_endings(text: str) -> list[str]:
    """The speech level of every sentence-final ending Kiwi finds in ``text``."""
    tokens = _kiwi().tokenize(text)
    levels = []
    for i, token in enumerate(tokens):
        if token.tag != "EF":
            continue
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        followed_by_yo = nxt is not None and nxt.tag == "JX" and nxt.form == "요"
        levels.append(ending_level(token.form, followed_by_yo))
    return levels


def is_korean(text: str, threshold: float = 0.5) -> bool:
    """True when at least ``threshold`` of the letters in ``text`` are Hangul."""
    letters = _LETTER.findall(text)
    if not letters:
        return False
    return sum(bool(_HANGUL.match(ch)) for ch in letters) / len(letters) >= threshold


def speech_level_scores(items: list[dict[str, Any]]) -> dict[str, float]:
    """Over answers ``text`` asked in level ``level``: share of endings in the asked level (micro-averaged),
    share of answers with no sentence ending, and share of answers written in Korean."""
    matched = total = no_ending = korean = 0
    for item in items:
        levels = sentence_endings(item["text"])
        matched += sum(level == item["level"] for level in levels)
        total += len(levels)
        no_ending += not levels
        korean += is_korean(item["text"])
    n = len(items)
    return {
        "level_match": matched / total if total else float("nan"),
        "no_ending_rate": no_ending / n if n else float("nan"),
        "korean_rate": korean / n if n else float("nan"),
    }
