"""Extend an existing model's tokenizer with Korean tokens (EEVE-style initialisation).

New tokens are taken from a Korean tokenizer (e.g. one from ``nexus-k tokenizer train``): Hangul pieces
that the base tokenizer splits into two or more tokens, most frequent first (on ``--corpus`` when given,
else in the Korean tokenizer's own order). They are added as ordinary (non-special) added tokens, so the
result is a plain Hugging Face folder that ``AutoTokenizer``, ``AutoModelForCausalLM`` and vLLM load.

Initialisation (after EEVE, Kim et al. 2024): a new input-embedding row is the mean of the rows of the
base pieces of its string; a new output row (untied models) is the output row of its first piece.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from nexus_k.core.errors import UserError
from tokenizer.sources import SourceOptions, read_corpus
from tokenizer.stats import load_tokenizer
from tokenizer.surgery import count_parameters, embeddings_tied, load_model_and_tokenizer, write_record

logger = logging.getLogger(__name__)

EXTEND_RECORD = "nexus_k_extend.json"
HANGUL = re.compile(r"[\uac00-\ud7a3]")


@dataclass
class ExtendConfig:
    """A vocabulary extension (saved beside the result as ``nexus_k_extend.json``)."""

    model: str
    """Base model folder, hub name or ``.gguf`` file."""
    tokenizer: str
    """Korean tokenizer whose pieces are candidates (folder or hub name)."""
    num_new: int
    """How many tokens to add (fewer when fewer candidates qualify)."""
    out: str
    """Folder for the extended model and tokenizer."""
    corpus: list[str] | None = None
    """Optional text: candidates are ranked by how often the Korean tokenizer uses them on it."""
    text_field: str = "text"
    """JSONL field or TSV/CSV column with the corpus text."""
    max_chars: int | None = 5_000_000
    """Read at most this many corpus characters."""
    min_chars: int = 2
    """Shortest candidate, in characters (spaces not counted)."""
    dtype: str = "auto"
    """Weights dtype to load and save."""

    def __post_init__(self) -> None:
        if self.num_new < 1:
            raise UserError("--num-new must be at least 1")


@dataclass
class NewToken:
    """One added token and the base pieces its embedding was built from."""

    text: str
    token_id: int
    base_ids: list[int]


def _candidate_order(korean, texts: list[str] | None) -> list[int]:
    """Korean-tokenizer ids, most useful first."""
    special = set(korean.all_special_ids)
    if texts:
        counts: Counter[int] = Counter()
        for start in range(0, len(texts), 512):
            for ids in korean(texts[start : start + 512], add_special_tokens=False)["input_ids"]:
                counts.update(ids)
        return [i for i, _ in counts.most_common() if i not in special]
    return [i for i in sorted(korean.get_vocab().values()) if i not in special]


def choose_new_tokens(base, korean, num_new: int, texts: list[str] | None, min_chars: int) -> list[str]:
    """Strings to add: Hangul pieces of ``korean`` that ``base`` splits into 2+ tokens, best first."""
    existing = set(base.get_vocab())
    chosen: list[str] = []
    seen: set[str] = set()
    for token_id in _candidate_order(korean, texts):
        text = korean.decode([token_id], clean_up_tokenization_spaces=False)
        body = text[1:] if text.startswith(" ") else text  # one leading space at most
        if text in seen or "\ufffd" in text or len(body) < min_chars or not HANGUL.search(body):
            continue
        if any(c.isspace() for c in body):
            continue
        seen.add(text)
        if text in existing or len(base.encode(text, add_special_tokens=False)) < 2:
            continue
        chosen.append(text)
        if len(chosen) == num_new:
            break
    return chosen


def extend_model(config: ExtendConfig) -> list[NewToken]:
    """Add Korean tokens to ``config.model``'s tokenizer and embeddings; save the result to ``config.out``."""
    import torch
    from tokenizers import AddedToken

    model, base = load_model_and_tokenizer(config.model, config.dtype)
    korean = load_tokenizer(config.tokenizer)
    texts = None
    if config.corpus:
        texts = read_corpus(config.corpus, SourceOptions(text_field=config.text_field), config.max_chars)
    strings = choose_new_tokens(base, korean, config.num_new, texts, config.min_chars)
    if not strings:
        raise UserError("no Korean token of that tokenizer is missing from the base tokenizer")
    pieces = {s: base.encode(s, add_special_tokens=False) for s in strings}
    # A leading space must match the raw text (a normaliser may rewrite spaces, e.g. to "▁").
    base.add_tokens([AddedToken(s, normalized=not s.startswith(" "), special=False) for s in strings])

    rows = model.get_input_embeddings().weight.shape[0]
    if len(base) > rows:
        model.resize_token_embeddings(len(base), mean_resizing=False)
    tied = embeddings_tied(model)
    input_weight = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    added: list[NewToken] = []
    with torch.no_grad():
        for text in strings:
            new_id = base.convert_tokens_to_ids(text)
            ids = pieces[text]
            input_weight[new_id] = input_weight[ids].mean(dim=0)
            if output is not None and not tied:
                output.weight[new_id] = output.weight[ids[0]]
            added.append(NewToken(text, new_id, ids))
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    base.save_pretrained(out)
    model.save_pretrained(out)
    record = {
        "config": asdict(config),
        "added": len(added),
        "vocab_after": len(base),
        "parameters_after": count_parameters(model),
        "tokens": [asdict(t) for t in added],
    }
    write_record(out, EXTEND_RECORD, record)
    logger.info("added %d tokens; saved to %s", len(added), out)
    return added
