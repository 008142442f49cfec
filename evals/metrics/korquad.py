"""KorQuAD 1.0's exact match and character-level F1, as its official evaluation script defines them."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_QUOTES_AND_BRACKETS = re.compile("['\"《》<>〈〉()‘’]")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Quotes and brackets become spaces, then lower-case, drop ASCII punctuation, squeeze spaces."""
    text = _QUOTES_AND_BRACKETS.sub(" ", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(text.split())


def exact_match(prediction: str, truth: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(truth))


def char_f1(prediction: str, truth: str) -> float:
    """F1 over the multiset of non-space characters of the normalised strings."""
    pred_chars = list(normalize_answer(prediction).replace(" ", ""))
    truth_chars = list(normalize_answer(truth).replace(" ", ""))
    same = sum((Counter(pred_chars) & Counter(truth_chars)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_chars)
    recall = same / len(truth_chars)
    return 2 * precision * recall / (precision + recall)


def best_over_answers(metric, prediction: str, truths: Sequence[str]) -> float:
    """The best score of ``prediction`` against any of the accepted answers."""
    return max(metric(prediction, truth) for truth in truths) if truths else 0.0
