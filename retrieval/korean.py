"""Korean text to search terms with Kiwi: content morphemes only, so that 서울은, 서울의 and 서울에서 all match
서울 (a whitespace tokenizer would see three different words)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

#: Kiwi (Sejong) tags kept as terms: nouns, numerals, pronouns, verb and adjective stems, roots, general
#: adverbs, determiners, and foreign / Chinese-character / number tokens. Particles (J*), endings (E*),
#: the copula (VC*), affixes (XP*/XS*) and punctuation carry no topic and are dropped.
CONTENT_TAGS = frozenset(
    {"NNG", "NNP", "NNB", "NR", "NP", "VV", "VA", "VX", "XR", "MAG", "MM", "SL", "SH", "SN"}
)


class KoreanMorphemes:
    """Callable tokenizer: ``KoreanMorphemes()(texts)`` gives one list of search terms per text."""

    def __init__(self, keep_tags: Iterable[str] = CONTENT_TAGS) -> None:
        from kiwipiepy import Kiwi

        self.keep_tags = frozenset(keep_tags)
        # One worker: the serving process and the benchmarks already use the cores; Kiwi's default
        # spawns a thread per core.
        self._kiwi = Kiwi(num_workers=1)

    def terms(self, text: str) -> list[str]:
        """Search terms of one text (NFC-normalised, Latin lower-cased)."""
        return self(text and [text])[0] if text else []

    def __call__(self, texts: list[str]) -> list[list[str]]:
        """Search terms of each text, in order."""
        if not texts:
            return []
        cleaned = [unicodedata.normalize("NFC", t) for t in texts]
        out = []
        for tokens in self._kiwi.tokenize(cleaned):
            out.append([t.form.lower() if t.tag == "SL" else t.form for t in tokens if t.tag in self.keep_tags])
        return out
